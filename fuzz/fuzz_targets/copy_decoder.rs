//! The binary COPY decoder on arbitrary bytes split at arbitrary points: the first byte picks how many cuts, the
//! next ones where. The columns are the task fixture's (every key shape and several types).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgshift::contract::model::ExtractTask;

fuzz_target!(|data: &[u8]| {
    let task: ExtractTask =
        serde_json::from_str(include_str!("../../tests/fixtures/extract_task.json")).expect("the fixture parses");
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let cuts = (n % 8) as usize;
    let (points, stream) = rest.split_at(cuts.min(rest.len()));
    let mut at: Vec<usize> = points.iter().map(|p| *p as usize * stream.len() / 255).collect();
    at.sort_unstable();
    let mut chunks = Vec::new();
    let mut from = 0;
    for c in at {
        chunks.push(&stream[from..c.max(from)]);
        from = c.max(from);
    }
    chunks.push(&stream[from..]);
    let _ = pgshift::source::decode_chunks(&task.columns, &task.key, &chunks, 4096);
});
