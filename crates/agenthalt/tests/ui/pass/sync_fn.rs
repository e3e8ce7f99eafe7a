use agenthalt::{guarded, Blocked, Engine};

#[derive(Debug)]
struct Error(Blocked);

impl From<Blocked> for Error {
    fn from(b: Blocked) -> Self {
        Error(b)
    }
}

static ENGINE: std::sync::LazyLock<Engine> = std::sync::LazyLock::new(Engine::new);

#[guarded(engine = ENGINE, agent_id = "bot", session_id = "s-1", name = "transfer")]
fn transfer(from: String, to: String, amount: u64, memo: Option<String>, tags: &[String]) -> Result<u64, Error> {
    let _ = (from, to, memo, tags);
    Ok(amount)
}

fn main() {
    assert_eq!(transfer("a".into(), "b".into(), 5, None, &[]).unwrap(), 5);
}
