use agenthalt::{guarded, Engine};

static ENGINE: std::sync::LazyLock<Engine> = std::sync::LazyLock::new(Engine::new);

#[derive(Debug)]
struct MyError;

#[guarded(engine = ENGINE)]
fn send(to: String) -> Result<(), MyError> {
    let _ = to;
    Ok(())
}

fn main() {}
