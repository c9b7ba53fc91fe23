//! The model's `tokenizer.json`, through the `tokenizers` crate.

use std::path::Path;

use crate::error::{Error, Result};

pub struct Tokenizer(tokenizers::Tokenizer);

impl Tokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        tokenizers::Tokenizer::from_file(path)
            .map(Self)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))
    }

    /// Token ids of `text`, with the special tokens the tokenizer's
    /// post-processor adds (a BOS, for tokenizers that add one), as the
    /// reference's `tokenizer(text)` gives them.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.0
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// Text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.0
            .decode(ids, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }
}
