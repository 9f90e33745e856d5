//! Document boundaries in a token stream (spec section 1.3).
//!
//! Every document starts with BOS. Document `i` spans `[b_i, b_{i+1}]` *inclusive* of the next
//! document's BOS, so that its `len - 1` prediction targets include the following BOS; summed
//! over documents this covers every target of the stream exactly once.

use super::BOS_ID;

/// A document as a span of the token stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Document {
    /// Index of the document's BOS in the stream.
    pub start: usize,
    /// Number of tokens, including the BOS and (except for the last document) the next BOS.
    pub len: usize,
}

impl Document {
    /// Number of prediction targets (`len - 1`).
    pub fn targets(&self) -> usize {
        self.len.saturating_sub(1)
    }
}

/// Finds the documents of a stream. Tokens before the first BOS (if any) belong to no document.
pub fn find_documents(tokens: &[u32]) -> Vec<Document> {
    let starts: Vec<usize> = tokens
        .iter()
        .enumerate()
        .filter(|(_, &t)| t == BOS_ID)
        .map(|(i, _)| i)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let end = starts.get(k + 1).map_or(tokens.len(), |&n| n + 1);
            Document {
                start: s,
                len: end - s,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_cover_every_target_once() {
        let toks = [1, 5, 6, 1, 7, 1, 8, 9, 10];
        let docs = find_documents(&toks);
        assert_eq!(
            docs,
            vec![
                Document { start: 0, len: 4 },
                Document { start: 3, len: 3 },
                Document { start: 5, len: 4 },
            ]
        );
        let targets: usize = docs.iter().map(|d| d.targets()).sum();
        assert_eq!(targets, toks.len() - 1);
    }
}
