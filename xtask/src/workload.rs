//! A deterministic recorded workload for `agenthalt eval`: a mix of calls that exercises every
//! guard (searches and model calls with costs, purchases, deletions, dangerous and read-only
//! tools, repeated calls, messages with and without sensitive data, malformed lines).

use std::io::Write;

/// A small deterministic generator (SplitMix64), so every run writes the same workload.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Writes `n` calls, one second of replay time apart, starting 2026-11-20T00:00:00Z.
pub(crate) fn write(n: u64, out: &mut impl Write) -> std::io::Result<()> {
    let mut rng = Rng(42);
    let start = 1_795_046_400u64;
    let mut out = std::io::BufWriter::new(out);
    for i in 0..n {
        let ts = start + i;
        let agent = rng.below(8);
        let session = rng.below(500);
        let head =
            format!(r#""call_id":"w{i}","agent_id":"agent-{agent}","session_id":"s-{session}","timestamp":{ts}"#);
        let body = match rng.below(20) {
            0..=4 => format!(r#""function_name":"web_search","arguments":{{"query":"topic {}","limit":10}}"#, rng.below(1000)),
            5..=7 => format!(r#""function_name":"gpt4_call","arguments":{{"prompt":"summarise document {}","max_tokens":512,"estimated_cost":0.0{}}}"#, rng.below(100), 1 + rng.below(9)),
            8 | 9 => {
                let cats = ["office", "books", "luxury_goods", "travel", "gambling"];
                let cat = cats[usize::try_from(rng.below(5)).unwrap_or(0)];
                format!(r#""function_name":"purchase_item","arguments":{{"item":"thing {}","amount":{}.{:02},"category":"{cat}","currency":"USD"}}"#, rng.below(100), rng.below(150), rng.below(100))
            }
            10 | 11 => {
                let ids = ["temp_report.txt", "draft_7", "inbox", "temp_/../sent", "cache_9", "db_production"];
                let id = ids[usize::try_from(rng.below(6)).unwrap_or(0)];
                format!(r#""function_name":"delete_file","arguments":{{"resource_id":"{id}"}}"#)
            }
            12 => r#""function_name":"drop_table","arguments":{"table":"users"}"#.to_owned(),
            13 | 14 => format!(r#""function_name":"get_user","arguments":{{"user_id":{}}}"#, rng.below(50)),
            15 => r#""function_name":"check_status","arguments":{"job":42}"#.to_owned(),
            16 => format!(
                r#""function_name":"send_email","arguments":{{"to":"user{}@example.com","subject":"Invoice","body":"Hello, your order {} has shipped. Regards."}}"#,
                rng.below(100),
                rng.below(100_000)
            ),
            17 => r#""function_name":"send_email","arguments":{"to":"hr@example.com","body":"My SSN is 123-45-6789 and card 4111 1111 1111 1111"}"#.to_owned(),
            18 => r#""function_name":"update_config","arguments":{"api_key":"sk_live_4eC39HqLyjWDarjtT1zdp7dc","retries":3}"#.to_owned(),
            _ => {
                if rng.below(10) == 0 {
                    writeln!(out, "{{\"function_name\": 42}}")?;
                    continue;
                }
                format!(r#""function_name":"list_items","arguments":{{"page":{}}}"#, rng.below(10))
            }
        };
        writeln!(out, "{{{head},{body}}}")?;
    }
    out.flush()
}
