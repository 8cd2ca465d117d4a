//! Replays the `reader_bytes` fuzz corpus (seeds and any minimised finds)
//! through the same entry point the fuzzer uses: no input may panic, and the
//! valid seed must still read back, so the corpus keeps exercising the reader.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::Path;

#[test]
fn fuzz_corpus_replays_without_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/reader_bytes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} missing: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 20, "corpus too small: {} files", files.len());
    let mut accepted_total = 0;
    for f in &files {
        let data = std::fs::read(f).unwrap();
        let accepted = ringlog::fuzzing::read_ring_bytes(&data);
        if f.file_name().is_some_and(|n| n == "valid") {
            assert!(accepted > 0, "the valid seed no longer reads");
        }
        accepted_total += accepted;
    }
    println!(
        "{} corpus files, {accepted_total} entries accepted",
        files.len()
    );
}
