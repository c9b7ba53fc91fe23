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

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2's tokenizer as scripts/fetch-smollm2.sh rebuilds it from the
    /// GGUF, against the ids the Python `tokenizers` gives for the same
    /// file (skipped when the model was not fetched).
    #[test]
    fn smollm2_tokenizer_round_trips() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/smollm2/hf/tokenizer.json");
        if !path.exists() {
            eprintln!("smollm2_tokenizer_round_trips: skipped: run scripts/fetch-smollm2.sh");
            return;
        }
        let t = Tokenizer::from_file(&path).unwrap();
        let ids = t.encode("The capital of France is").unwrap();
        assert_eq!(ids, [504, 3575, 282, 4649, 314]);
        assert_eq!(t.decode(&ids).unwrap(), "The capital of France is");
        let chat = t.encode("<|im_start|>user\nHi 2024<|im_end|>").unwrap();
        assert_eq!(chat[0], 1, "<|im_start|> is one special token");
        assert_eq!(t.decode(&[7042, 30, 198]).unwrap(), " Paris.\n");
    }

    #[test]
    fn a_missing_tokenizer_is_an_error() {
        let e = Tokenizer::from_file(Path::new("/nonexistent/tokenizer.json"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("/nonexistent/tokenizer.json"));
    }
}
