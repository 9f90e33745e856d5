//! SentencePiece BPE encoding (`bpe::Model::SampleEncode` without dropout), then the processor's
//! id mapping with byte fallback.
//!
//! The normalized text is split into symbols (a user-defined piece, frozen, or one UTF-8
//! character). All adjacent pairs whose concatenation is a mergeable piece go into a max-heap keyed
//! by (piece score, then leftmost position). The best pair is merged, stale heap entries are
//! skipped (a symbol emptied or grown since), and the two new neighbour pairs are pushed: O(n log n)
//! in the text length. Final symbols that are UNUSED pieces are split back into the pair that formed
//! them. Each final symbol maps to its id (`PieceToId`); an unknown one becomes its `<0xXX>` byte
//! pieces when `byte_fallback` is on, else `<unk>`.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::proto::PieceType;
use super::vocab::{FnvMap, Vocab};

const NONE: usize = usize::MAX;

/// A span `[start, start + len)` of the normalized text, in a doubly linked list.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: usize,
    next: usize,
    frozen: bool,
}

/// A candidate merge of `symbols[left]` with `symbols[right]`.
struct Pair {
    score: f32,
    left: usize,
    right: usize,
    /// Byte length of the merged piece when the pair was found (stale check).
    size: usize,
}

impl Ord for Pair {
    fn cmp(&self, other: &Self) -> Ordering {
        // Higher score first; on ties the leftmost pair (smaller `left`) first.
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}
impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Pair {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Pair {}

struct Merger<'a> {
    vocab: &'a Vocab,
    text: &'a [u8],
    symbols: Vec<Symbol>,
    agenda: BinaryHeap<Pair>,
    /// Merged UNUSED piece -> (left part, right part), last definition wins as in SentencePiece.
    rev_merge: FnvMap<&'a [u8], (&'a [u8], &'a [u8])>,
}

impl<'a> Merger<'a> {
    fn piece(&self, i: usize) -> &'a [u8] {
        let s = self.symbols[i];
        &self.text[s.start..s.start + s.len]
    }

    fn maybe_add_pair(&mut self, left: usize, right: usize) {
        if left == NONE || right == NONE {
            return;
        }
        let (l, r) = (self.symbols[left], self.symbols[right]);
        if l.frozen || r.frozen {
            return;
        }
        // Symbols are contiguous spans, so the concatenation is a slice of the text.
        let merged = &self.text[l.start..l.start + l.len + r.len];
        let Some(id) = self.vocab.mergeable_id(merged) else {
            return;
        };
        self.agenda.push(Pair {
            score: self.vocab.score(id),
            left,
            right,
            size: merged.len(),
        });
        if self.vocab.kind(id) == Some(PieceType::Unused) {
            let (lp, rp) = (self.piece(left), self.piece(right));
            self.rev_merge.insert(merged, (lp, rp));
        }
    }

    fn run(&mut self) {
        for i in 1..self.symbols.len() {
            self.maybe_add_pair(i - 1, i);
        }
        while let Some(top) = self.agenda.pop() {
            let (l, r) = (self.symbols[top.left], self.symbols[top.right]);
            if l.len == 0 || r.len == 0 || l.len + r.len != top.size {
                continue;
            }
            self.symbols[top.left].len = l.len + r.len;
            self.symbols[top.left].next = r.next;
            if r.next != NONE {
                self.symbols[r.next].prev = top.left;
            }
            self.symbols[top.right].len = 0;
            self.maybe_add_pair(l.prev, top.left);
            self.maybe_add_pair(top.left, r.next);
        }
    }

    /// Appends the ids of one final symbol, splitting UNUSED pieces and applying byte fallback.
    /// Without byte fallback a run of unknown symbols becomes a single `<unk>` (`prev_unk`).
    fn emit(&self, piece: &'a [u8], prev_unk: &mut bool, out: &mut Vec<u32>) {
        let mut stack = vec![piece];
        while let Some(w) = stack.pop() {
            let id = self.vocab.piece_to_id(w);
            let kind = self.vocab.kind(id);
            if kind == Some(PieceType::Unused) {
                if let Some(&(lp, rp)) = self.rev_merge.get(w) {
                    stack.push(rp);
                    stack.push(lp);
                    continue;
                }
            }
            let is_unk = kind == Some(PieceType::Unknown);
            match &self.vocab.byte_ids {
                Some(byte_ids) if is_unk => {
                    out.extend(w.iter().map(|&b| byte_ids[usize::from(b)]));
                }
                _ => {
                    if !(is_unk && *prev_unk) {
                        out.push(id);
                    }
                }
            }
            *prev_unk = is_unk;
        }
    }
}

/// Encodes already-normalized text, appending ids to `out`.
pub(crate) fn encode(vocab: &Vocab, text: &[u8], out: &mut Vec<u32>) {
    if text.is_empty() {
        return;
    }
    let mut symbols = Vec::with_capacity(text.len());
    let mut pos = 0;
    while pos < text.len() {
        let (len, frozen) = vocab.user_defined.prefix_match(&text[pos..]);
        let index = symbols.len();
        symbols.push(Symbol {
            start: pos,
            len,
            prev: if index == 0 { NONE } else { index - 1 },
            next: if pos + len == text.len() {
                NONE
            } else {
                index + 1
            },
            frozen,
        });
        pos += len;
    }
    let mut merger = Merger {
        vocab,
        text,
        agenda: BinaryHeap::with_capacity(symbols.len()),
        symbols,
        rev_merge: FnvMap::default(),
    };
    merger.run();
    let mut i = 0;
    let mut prev_unk = false;
    while i != NONE {
        merger.emit(merger.piece(i), &mut prev_unk, out);
        i = merger.symbols[i].next;
    }
}
