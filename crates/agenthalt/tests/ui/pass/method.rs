use agenthalt::{guarded, Blocked, Engine};

struct Store {
    engine: Engine,
}

impl Store {
    #[guarded(engine = self.engine, agent_id = self.agent())]
    fn put(&self, key: String, value: Vec<u8>) -> Result<(), Blocked> {
        let _ = (key, value);
        Ok(())
    }

    #[guarded(engine = self.engine)]
    async fn get(&self, key: String) -> Result<Option<Vec<u8>>, Blocked> {
        let _ = key;
        Ok(None)
    }

    fn agent(&self) -> String {
        "store-bot".to_owned()
    }
}

fn main() {
    let store = Store { engine: Engine::new() };
    store.put("k".into(), vec![1, 2]).unwrap();
    let _future = store.get("k".into());
}
