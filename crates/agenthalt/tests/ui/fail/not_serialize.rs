use agenthalt::{guarded, Blocked, Engine};

static ENGINE: std::sync::LazyLock<Engine> = std::sync::LazyLock::new(Engine::new);

struct Secret(u32);

#[guarded(engine = ENGINE)]
fn reveal(secret: Secret) -> Result<u32, Blocked> {
    Ok(secret.0)
}

fn main() {}
