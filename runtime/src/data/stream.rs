//! The training token stream (spec 1.4), as `train_gpt.py`'s `TokenStream` and
//! `DistributedTokenLoader`: shards in sorted order, read sequentially, wrapping forever; no
//! shuffling. Each micro-step takes `(local + 1) · world` contiguous tokens and rank `r` gets the
//! `r`-th span of `local + 1`, so inputs and targets are the span shifted by one.

use super::shard::{resolve_data_paths, Shard};
use crate::{Error, Result};
use std::path::PathBuf;

/// Where the stream stands (saved in checkpoints so a resumed run sees the same tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamPos {
    pub file: usize,
    pub token: usize,
}

/// One rank's micro-batch: `rows` sequences of `seq` tokens, targets shifted by one.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    pub rows: usize,
    pub seq: usize,
}

/// Sequential reader over a sorted list of shards.
pub struct TokenStream {
    files: Vec<PathBuf>,
    shard: Shard,
    pos: StreamPos,
}

impl TokenStream {
    /// Opens the shards named by `spec` (file, directory or glob) at the start.
    pub fn open(spec: &str) -> Result<Self> {
        Self::open_at(spec, StreamPos::default())
    }

    /// Opens the shards named by `spec` at a saved position.
    pub fn open_at(spec: &str, pos: StreamPos) -> Result<Self> {
        let files = resolve_data_paths(spec)?;
        let shard = Shard::open(&files[0])?;
        let mut s = TokenStream {
            files,
            shard,
            pos: StreamPos::default(),
        };
        s.seek(pos)?;
        Ok(s)
    }

    /// Moves to a saved position.
    pub fn seek(&mut self, pos: StreamPos) -> Result<()> {
        if pos.file >= self.files.len() {
            return Err(Error::Data(format!(
                "stream position names shard {} of {}",
                pos.file,
                self.files.len()
            )));
        }
        let shard = Shard::open(&self.files[pos.file])?;
        if pos.token > shard.len() {
            return Err(Error::Data(format!(
                "stream position {} is past the end of {}",
                pos.token,
                self.files[pos.file].display()
            )));
        }
        self.shard = shard;
        self.pos = pos;
        Ok(())
    }

    /// The current position.
    pub fn position(&self) -> StreamPos {
        self.pos
    }

    /// The next `n` tokens, crossing (and wrapping around) shard ends.
    pub fn take(&mut self, n: usize) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(n);
        let mut empty_in_a_row = 0;
        while out.len() < n {
            let avail = self.shard.len() - self.pos.token;
            if avail == 0 {
                empty_in_a_row += 1;
                if empty_in_a_row > self.files.len() {
                    return Err(Error::Data("training shards hold no tokens".into()));
                }
                self.pos = StreamPos {
                    file: (self.pos.file + 1) % self.files.len(),
                    token: 0,
                };
                self.shard = Shard::open(&self.files[self.pos.file])?;
                continue;
            }
            empty_in_a_row = 0;
            let k = (n - out.len()).min(avail);
            out.extend((self.pos.token..self.pos.token + k).map(|i| self.shard.token(i)));
            self.pos.token += k;
        }
        Ok(out)
    }

    /// One micro-step for every rank: `global_tokens / (world · accum)` tokens per rank, in
    /// sequences of `seq`.
    pub fn next_batch(
        &mut self,
        global_tokens: usize,
        seq: usize,
        world: usize,
        accum: usize,
    ) -> Result<Vec<Batch>> {
        let local = global_tokens / (world * accum).max(1);
        if seq == 0 || local == 0 || !local.is_multiple_of(seq) {
            return Err(Error::Usage(format!(
                "TRAIN_BATCH_TOKENS {global_tokens} over {world} ranks x {accum} micro-steps \
                 leaves {local} tokens per micro-batch, not a positive multiple of \
                 TRAIN_SEQ_LEN {seq}"
            )));
        }
        let span = local + 1;
        let chunk = self.take(span * world)?;
        Ok(chunk
            .chunks_exact(span)
            .map(|s| Batch {
                inputs: s[..local].to_vec(),
                targets: s[1..].to_vec(),
                rows: local / seq,
                seq,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard_file(dir: &std::path::Path, name: &str, toks: &[u16]) {
        let mut b = vec![0u8; 1024];
        b[0..4].copy_from_slice(&super::super::SHARD_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&1i32.to_le_bytes());
        b[8..12].copy_from_slice(&(toks.len() as i32).to_le_bytes());
        for t in toks {
            b.extend_from_slice(&t.to_le_bytes());
        }
        std::fs::write(dir.join(name), b).unwrap();
    }

    #[test]
    fn spans_cross_shards_wrap_and_resume() {
        let dir = std::env::temp_dir().join(format!("pgolf-stream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        shard_file(&dir, "a_000000.bin", &[0, 1, 2, 3, 4]);
        shard_file(&dir, "a_000001.bin", &[5, 6, 7]);
        let spec = dir.join("a_*.bin");
        let spec = spec.to_str().unwrap();
        let mut s = TokenStream::open(spec).unwrap();
        // 2 ranks x 2 tokens (+1 each): 6 tokens.
        let b = s.next_batch(4, 2, 2, 1).unwrap();
        assert_eq!(b[0].inputs, vec![0, 1]);
        assert_eq!(b[0].targets, vec![1, 2]);
        assert_eq!(b[1].inputs, vec![3, 4]);
        assert_eq!(b[1].targets, vec![4, 5]);
        let pos = s.position();
        assert_eq!(pos, StreamPos { file: 1, token: 1 });
        let next = s.take(4).unwrap();
        assert_eq!(next, vec![6, 7, 0, 1]);
        let mut r = TokenStream::open_at(spec, pos).unwrap();
        assert_eq!(r.take(4).unwrap(), next);
        assert!(s.next_batch(3, 2, 1, 1).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
