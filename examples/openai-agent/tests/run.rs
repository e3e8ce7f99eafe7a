//! The example runs (in CI too): its own checks fail it when the loop misbehaves.

#[test]
fn the_agent_loop_runs_the_allowed_call_and_answers_all_three() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_openai-agent")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("call_weather   get_weather    -> Oslo: 4 °C, light snow"), "{stdout}");
    assert!(stdout.contains("assistant: Done."), "{stdout}");
}
