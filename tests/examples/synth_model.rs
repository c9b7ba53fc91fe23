//! Writes a synthetic Llama-shaped model directory of BF16 safetensors
//! shards (for memory and speed measurements on multi-GB models; no
//! weights are committed): `synth_model OUT_DIR [LAYERS]` (default 8).
//!
//! Shapes are Llama-3-8B's (hidden 4096, intermediate 14336, 8 KV heads of
//! 128, vocabulary 128256); weights are `zipserv_format::synth::trained_like`
//! (exponents with a trained model's statistics). Shards are written tensor
//! by tensor, so the generator holds one tensor in memory.

use std::io::Write;
use std::path::Path;

use safetensors::Dtype;
use zipserv_format::st::{Header, TensorInfo};
use zipserv_format::synth::trained_like;

const HIDDEN: usize = 4096;
const INTERMEDIATE: usize = 14336;
const KV: usize = 1024;
const VOCAB: usize = 128_256;
const LAYERS_PER_SHARD: usize = 4;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(out), layers) = (args.get(1), args.get(2)) else {
        eprintln!("usage: synth_model OUT_DIR [LAYERS]");
        std::process::exit(2);
    };
    let layers: usize = layers.map_or(8, |l| l.parse().expect("LAYERS is a number"));
    let out = Path::new(out);
    std::fs::create_dir_all(out).unwrap();
    let mut shards: Vec<Vec<(String, [usize; 2])>> =
        vec![vec![("model.embed_tokens.weight".into(), [VOCAB, HIDDEN])]];
    for l in 0..layers {
        if l % LAYERS_PER_SHARD == 0 {
            shards.push(Vec::new());
        }
        let p = format!("model.layers.{l}");
        let shard = shards.last_mut().unwrap();
        for (name, shape) in [
            ("self_attn.q_proj", [HIDDEN, HIDDEN]),
            ("self_attn.k_proj", [KV, HIDDEN]),
            ("self_attn.v_proj", [KV, HIDDEN]),
            ("self_attn.o_proj", [HIDDEN, HIDDEN]),
            ("mlp.gate_proj", [INTERMEDIATE, HIDDEN]),
            ("mlp.up_proj", [INTERMEDIATE, HIDDEN]),
            ("mlp.down_proj", [HIDDEN, INTERMEDIATE]),
        ] {
            shard.push((format!("{p}.{name}.weight"), shape));
        }
    }
    shards.push(vec![("lm_head.weight".into(), [VOCAB, HIDDEN])]);
    let n = shards.len();
    let mut weight_map = Vec::new();
    for (i, tensors) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{n:05}.safetensors", i + 1);
        write_shard(&out.join(&file), tensors, i as u64);
        weight_map.extend(
            tensors
                .iter()
                .map(|(t, _)| format!("    \"{t}\": \"{file}\"")),
        );
    }
    let index = format!(
        "{{\n  \"weight_map\": {{\n{}\n  }}\n}}\n",
        weight_map.join(",\n")
    );
    std::fs::write(out.join("model.safetensors.index.json"), index).unwrap();
    std::fs::write(
        out.join("config.json"),
        format!("{{\"model_type\": \"llama\", \"num_hidden_layers\": {layers}}}\n"),
    )
    .unwrap();
    println!("{}: {n} shards", out.display());
}

fn write_shard(path: &Path, tensors: &[(String, [usize; 2])], seed: u64) {
    let mut at = 0;
    let infos = tensors
        .iter()
        .map(|(name, shape)| {
            let len = 2 * (shape[0] * shape[1]) as u64;
            at += len;
            TensorInfo {
                name: name.clone(),
                dtype: Dtype::BF16,
                shape: shape.to_vec(),
                begin: at - len,
                end: at,
            }
        })
        .collect();
    let json = Header {
        metadata: vec![("format".into(), "pt".into())],
        tensors: infos,
    }
    .to_json();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(&(json.len() as u64).to_le_bytes()).unwrap();
    f.write_all(&json).unwrap();
    for (t, (_, shape)) in tensors.iter().enumerate() {
        let values = trained_like(shape[0], shape[1], seed << 32 ^ t as u64).unwrap();
        f.write_all(bytemuck::cast_slice(&values)).unwrap();
    }
    f.flush().unwrap();
}
