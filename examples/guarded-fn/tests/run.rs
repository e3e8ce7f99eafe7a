//! The example runs (in CI too), and does what it says.

#[test]
fn the_budget_and_the_deletion_guard_block_what_they_should() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_guarded-fn")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "summarize #1: summary of 23 characters");
    assert_eq!(lines[1], "summarize #2: summary of 23 characters");
    assert!(lines[2].starts_with("summarize #3: `summarize` was blocked: Daily budget exceeded"), "{stdout}");
    assert_eq!(lines[3], "delete_folder(newsletters): deleted newsletters");
    assert!(
        lines[4].starts_with("delete_folder(inbox): `delete_folder` was blocked: A target in `path` is protected"),
        "{stdout}"
    );
}
