use agenthalt::{guarded, Engine};

static ENGINE: std::sync::LazyLock<Engine> = std::sync::LazyLock::new(Engine::new);

#[guarded(engine = ENGINE, agent = "bot")]
fn send(to: String) -> Result<(), agenthalt::Blocked> {
    let _ = to;
    Ok(())
}

fn main() {}
