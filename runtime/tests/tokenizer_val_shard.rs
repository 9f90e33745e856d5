//! Re-encodes every validation document and compares with the shipped val shard, id for id, and
//! checks the metric's byte denominator (shared/data/README.md: 2,667,711 bytes).
//!
//! Needs the shared data folder; without it the test prints `SKIPPED: ...` and passes (fails
//! under `PGOLF_REQUIRE_SHARED=1`, as in CI).

mod common;

use std::time::Instant;

use pgolf_rt::tokenizer::Tokenizer;

/// Parses the `"text"` string of one JSONL line (`{"text": "..."}`) with JSON escapes.
fn json_text_field(line: &str) -> String {
    let key = "\"text\"";
    let at = line.find(key).expect("no \"text\" field") + key.len();
    let rest = line[at..].trim_start();
    let rest = rest.strip_prefix(':').expect("':' after key").trim_start();
    let mut chars = rest.strip_prefix('"').expect("string value").chars();
    let mut out = String::new();
    let hex4 = |chars: &mut std::str::Chars<'_>| -> u32 {
        let s: String = chars.by_ref().take(4).collect();
        u32::from_str_radix(&s, 16).expect("\\u escape")
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => return out,
            '\\' => match chars.next().expect("escape") {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'u' => {
                    let hi = hex4(&mut chars);
                    let cp = if (0xD800..0xDC00).contains(&hi) {
                        let mut look = chars.clone();
                        if look.next() == Some('\\') && look.next() == Some('u') {
                            let lo = hex4(&mut look);
                            if (0xDC00..0xE000).contains(&lo) {
                                chars = look;
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                0xFFFD
                            }
                        } else {
                            0xFFFD
                        }
                    } else {
                        hi
                    };
                    out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                }
                other => out.push(other), // '"', '\\', '/'
            },
            c => out.push(c),
        }
    }
    panic!("unterminated string");
}

fn read_shard(path: &std::path::Path) -> Vec<u32> {
    let bytes = std::fs::read(path).expect("read shard");
    assert!(bytes.len() >= 1024, "short header");
    let h = |i: usize| i32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
    assert_eq!(h(0), 20240520, "magic");
    assert_eq!(h(1), 1, "version");
    let n = h(2) as usize;
    assert_eq!(bytes.len(), 1024 + 2 * n, "file size");
    bytes[1024..]
        .chunks_exact(2)
        .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
        .collect()
}

#[test]
fn json_parser_handles_escapes() {
    let s = json_text_field(r#"{"text": "a\"b\\c\/\n\t\u00e9\ud83d\ude00\ud800x"}"#);
    assert_eq!(s, "a\"b\\c/\n\té😀\u{FFFD}x");
}

#[test]
fn val_shard_reencodes_exactly() {
    let Some(shared) = common::shared() else {
        return;
    };
    let data = shared.join("data");
    let docs_path = data.join("val_docs.jsonl");
    let shard_path = data.join("text_sp1024/fineweb_val_000000.bin");
    let model_path = data.join("tokenizers/pg_sp1024_bpe.model");
    let tok = Tokenizer::load(&model_path).expect("load tokenizer");
    let shard = read_shard(&shard_path);
    let docs_text = std::fs::read_to_string(&docs_path).expect("read docs");
    let docs: Vec<String> = docs_text.lines().map(json_text_field).collect();
    assert_eq!(docs.len(), 977);

    let start = Instant::now();
    let bos = tok.bos_id();
    let mut pos = 0usize;
    let mut mismatches = Vec::new();
    let mut stream = Vec::with_capacity(shard.len());
    for (i, doc) in docs.iter().enumerate() {
        let mut ids = vec![bos];
        ids.extend(tok.encode(doc));
        let expected = shard
            .get(pos..pos + ids.len())
            .unwrap_or(&shard[pos.min(shard.len())..]);
        if ids != expected {
            let first = ids
                .iter()
                .zip(expected)
                .position(|(a, b)| a != b)
                .unwrap_or(ids.len().min(expected.len()));
            mismatches.push(format!(
                "doc {i}: first difference at token {first} (ours {:?}, shard {:?}), lengths {} vs {}",
                ids.get(first),
                expected.get(first),
                ids.len(),
                expected.len()
            ));
            // Resynchronise on the next BOS so later documents are still checked.
            let next = shard
                .get(pos + 1..)
                .unwrap_or(&[])
                .iter()
                .position(|&t| t == bos)
                .map_or(shard.len(), |k| pos + 1 + k);
            pos = next;
        } else {
            pos += ids.len();
        }
        stream.extend(ids);
    }
    let elapsed = start.elapsed();
    eprintln!(
        "encoded {} docs ({} bytes) in {:.2?}",
        docs.len(),
        docs.iter().map(String::len).sum::<usize>(),
        elapsed
    );
    assert!(
        mismatches.is_empty(),
        "{} of {} documents differ:\n{}",
        mismatches.len(),
        docs.len(),
        mismatches.join("\n")
    );
    assert_eq!(pos, shard.len(), "shard has tokens after the last document");
    assert_eq!(stream, shard);
    assert_eq!(
        &shard[..12],
        &[1, 758, 949, 509, 939, 230, 132, 152, 477, 977, 985, 789]
    );

    // The metric's denominator over the whole shard (README: 2,667,711 bytes).
    let lut = tok.byte_lut(tok.vocab_size());
    assert_eq!(lut.count_bytes(&shard), 2_667_711);
}
