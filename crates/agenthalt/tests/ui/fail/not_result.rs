use agenthalt::{guarded, Engine};

static ENGINE: std::sync::LazyLock<Engine> = std::sync::LazyLock::new(Engine::new);

#[guarded(engine = ENGINE)]
fn delete(path: String) -> bool {
    path.is_empty()
}

fn main() {}
