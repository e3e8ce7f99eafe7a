use agenthalt::guarded;

#[guarded(agent_id = "bot")]
fn send(to: String) -> Result<(), agenthalt::Blocked> {
    let _ = to;
    Ok(())
}

fn main() {}
