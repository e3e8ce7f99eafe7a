use agenthalt::{guarded, Blocked, Engine};

#[derive(Debug)]
enum Error {
    Blocked(Blocked),
}

impl From<Blocked> for Error {
    fn from(b: Blocked) -> Self {
        Error::Blocked(b)
    }
}

#[guarded(engine = engine())]
async fn fetch(url: String) -> std::result::Result<usize, Error> {
    Ok(url.len())
}

fn engine() -> Engine {
    Engine::new()
}

fn main() {
    let _future = fetch("https://example.com".into());
}
