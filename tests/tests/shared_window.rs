//! The projections an engine stacks (a Llama block's q/k/v and gate/up)
//! share one window base after compression, so that
//! `CompressedMatrix::stack_rows` joins them; everything else is compressed
//! exactly as `CompressedMatrix::encode` does it.

use std::collections::HashMap;
use std::path::Path;

use half::bf16;
use zipserv_format::CompressedMatrix;
use zipserv_format::codec::{best_window_base, exponent_histogram};
use zipserv_format::container::{Encoding, ZsvFile};
use zipserv_format::convert::{
    CompressOptions, Plan, compress_dir, compress_file, decompress_dir, decompress_file,
    stack_groups, verify_dir, verify_file,
};
use zipserv_format::st::SafetensorsFile;
use zipserv_format::synth::{OffsetHistogram, Sampler};
use zipserv_tests::st::{self, Tensor};

const HIDDEN: usize = 256;
const KV: usize = 64;
const INTER: usize = 768;

/// A matrix whose exponents follow trained weights' distribution with the
/// window at `base`: one base more is twice the scale.
fn trained_at(base: u8, rows: usize, cols: usize, seed: u64) -> Vec<bf16> {
    Sampler::new(&OffsetHistogram::trained(), base)
        .unwrap()
        .matrix(rows, cols, seed)
        .unwrap()
}

fn bits(w: &[bf16]) -> Vec<u16> {
    w.iter().map(|v| v.to_bits()).collect()
}

/// A named BF16 tensor and its values.
struct Weight {
    name: String,
    shape: Vec<usize>,
    values: Vec<bf16>,
}

impl Weight {
    fn new(name: impl Into<String>, shape: &[usize], values: Vec<bf16>) -> Self {
        Self {
            name: name.into(),
            shape: shape.to_vec(),
            values,
        }
    }

    fn tensor(&self) -> Tensor {
        Tensor::bf16(&self.name, &self.shape, &bits(&self.values))
    }

    fn own_base(&self) -> u8 {
        best_window_base(&exponent_histogram(&self.values))
    }
}

/// Names of a Llama block's stacked projections, in stacking order.
fn groups(layer: usize) -> [Vec<String>; 2] {
    let p = format!("model.layers.{layer}");
    [
        ["q", "k", "v"]
            .map(|x| format!("{p}.self_attn.{x}_proj.weight"))
            .to_vec(),
        ["gate", "up"]
            .map(|x| format!("{p}.mlp.{x}_proj.weight"))
            .to_vec(),
    ]
}

/// A Llama block with q/k/v/o at `attn` bases and gate/up/down at `mlp`
/// bases (different scales, so the encoder's own bases differ), and its
/// 1-D norms.
fn llama_block(layer: usize, attn: [u8; 4], mlp: [u8; 3], seed: u64) -> Vec<Weight> {
    let p = format!("model.layers.{layer}");
    let mut w = vec![Weight::new(
        format!("{p}.input_layernorm.weight"),
        &[HIDDEN],
        vec![bf16::ONE; HIDDEN],
    )];
    for (i, (x, rows)) in [("q", HIDDEN), ("k", KV), ("v", KV), ("o", HIDDEN)]
        .into_iter()
        .enumerate()
    {
        let values = trained_at(attn[i], rows, HIDDEN, seed + i as u64);
        w.push(Weight::new(
            format!("{p}.self_attn.{x}_proj.weight"),
            &[rows, HIDDEN],
            values,
        ));
    }
    w.push(Weight::new(
        format!("{p}.post_attention_layernorm.weight"),
        &[HIDDEN],
        vec![bf16::ONE; HIDDEN],
    ));
    for (i, (x, rows, cols)) in [
        ("gate", INTER, HIDDEN),
        ("up", INTER, HIDDEN),
        ("down", HIDDEN, INTER),
    ]
    .into_iter()
    .enumerate()
    {
        let values = trained_at(mlp[i], rows, cols, seed + 10 + i as u64);
        w.push(Weight::new(
            format!("{p}.mlp.{x}_proj.weight"),
            &[rows, cols],
            values,
        ));
    }
    w
}

/// Two blocks and an embedding, as a small Llama checkpoint holds them.
fn llama_model() -> Vec<Weight> {
    let mut w = vec![Weight::new(
        "model.embed_tokens.weight",
        &[512, HIDDEN],
        trained_at(113, 512, HIDDEN, 1),
    )];
    w.extend(llama_block(0, [119, 120, 121, 119], [118, 119, 118], 100));
    w.extend(llama_block(1, [120, 118, 119, 120], [119, 117, 119], 200));
    w.push(Weight::new(
        "model.norm.weight",
        &[HIDDEN],
        vec![bf16::ONE; HIDDEN],
    ));
    w
}

fn write(path: &Path, weights: &[Weight]) {
    let tensors: Vec<Tensor> = weights.iter().map(Weight::tensor).collect();
    st::write(path, &tensors, None);
}

fn by_name(weights: &[Weight]) -> HashMap<&str, &Weight> {
    weights.iter().map(|w| (w.name.as_str(), w)).collect()
}

/// The compressed matrix stored for `name`.
fn matrix(zsv: &ZsvFile, name: &str) -> CompressedMatrix {
    zsv.matrix(zsv.tensor(name).unwrap()).unwrap()
}

/// Compresses `weights` as one file and checks the byte-for-byte round
/// trip; returns the opened `.zsv`.
fn compress(dir: &Path, weights: &[Weight]) -> ZsvFile {
    let (input, zsv, back) = (
        dir.join("in.safetensors"),
        dir.join("m.zsv"),
        dir.join("back.safetensors"),
    );
    write(&input, weights);
    compress_file(&input, &zsv, CompressOptions::default(), |_| {}).unwrap();
    assert!(verify_file(&input, &zsv).unwrap().identical_file);
    decompress_file(&zsv, &back, |_| {}).unwrap();
    assert!(std::fs::read(&input).unwrap() == std::fs::read(&back).unwrap());
    ZsvFile::open(&zsv).unwrap()
}

/// The group's members share the base of their summed histograms, stack,
/// and the stacked matrix is what `encode` makes of their concatenation.
fn check_group(zsv: &ZsvFile, weights: &HashMap<&str, &Weight>, names: &[String]) {
    let members: Vec<&Weight> = names.iter().map(|n| weights[n.as_str()]).collect();
    let own: Vec<u8> = members.iter().map(|w| w.own_base()).collect();
    let mut sum = [0u64; 256];
    for w in &members {
        for (s, c) in sum.iter_mut().zip(exponent_histogram(&w.values)) {
            *s += c;
        }
    }
    let shared = best_window_base(&sum);
    let matrices: Vec<CompressedMatrix> = names.iter().map(|n| matrix(zsv, n)).collect();
    for (m, n) in matrices.iter().zip(names) {
        assert_eq!(m.base(), shared, "{n}: own bases {own:?}");
        assert_eq!(
            *m,
            CompressedMatrix::encode_with_base(
                &weights[n.as_str()].values,
                m.rows(),
                m.cols(),
                shared
            )
            .unwrap()
        );
    }
    let refs: Vec<&CompressedMatrix> = matrices.iter().collect();
    let stacked = CompressedMatrix::stack_rows(&refs).unwrap();
    let all: Vec<bf16> = members.iter().flat_map(|w| w.values.clone()).collect();
    assert_eq!(bits(&stacked.decode()), bits(&all));
    let rows = all.len() / members[0].shape[1];
    assert_eq!(
        stacked,
        CompressedMatrix::encode(&all, rows, members[0].shape[1]).unwrap()
    );
}

/// `name` is stored as `encode` alone makes it.
fn check_own(zsv: &ZsvFile, weights: &HashMap<&str, &Weight>, name: &str) {
    let w = weights[name];
    let m = matrix(zsv, name);
    assert_eq!(m.base(), w.own_base(), "{name}");
    assert_eq!(
        m,
        CompressedMatrix::encode(&w.values, w.shape[0], w.shape[1]).unwrap(),
        "{name}"
    );
}

#[test]
fn a_llama_blocks_projections_share_a_base_and_stack() {
    let model = llama_model();
    let weights = by_name(&model);
    // The input is what the test is about: without sharing, q/k/v and
    // gate/up would have bases one or two apart.
    for layer in 0..2 {
        for g in groups(layer) {
            let own: Vec<u8> = g.iter().map(|n| weights[n.as_str()].own_base()).collect();
            let spread = own.iter().max().unwrap() - own.iter().min().unwrap();
            assert!((1..=2).contains(&spread), "{g:?}: {own:?}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let zsv = compress(dir.path(), &model);
    for layer in 0..2 {
        for g in groups(layer) {
            check_group(&zsv, &weights, &g);
        }
        for x in ["self_attn.o_proj", "mlp.down_proj"] {
            check_own(&zsv, &weights, &format!("model.layers.{layer}.{x}.weight"));
        }
    }
    check_own(&zsv, &weights, "model.embed_tokens.weight");
    let tiles = zsv
        .tensors()
        .iter()
        .filter(|t| matches!(t.encoding, Encoding::Tiles(_)))
        .count();
    assert_eq!(tiles, 15);
}

#[test]
fn files_without_llama_names_are_compressed_as_before() {
    // BERT naming (MiniLM's), and names that look like a group but are not
    // one: a bias, a lone q_proj, a gate_proj without up_proj.
    let mut model = vec![];
    for (i, name) in [
        "encoder.layer.0.attention.self.query.weight",
        "encoder.layer.0.attention.self.key.weight",
        "encoder.layer.0.attention.self.value.weight",
        "layers.0.q_proj.weight",
        "layers.0.q_proj.weight.scale",
        "mlp.gate_proj.weight",
        "mlp.up_proj.bias",
    ]
    .into_iter()
    .enumerate()
    {
        let base = 117 + (i % 3) as u8;
        model.push(Weight::new(
            name,
            &[64, HIDDEN],
            trained_at(base, 64, HIDDEN, 40 + i as u64),
        ));
    }
    model.push(Weight::new(
        "k_proj.weight",
        &[2, HIDDEN],
        trained_at(120, 2, HIDDEN, 5),
    ));
    let weights = by_name(&model);
    let dir = tempfile::tempdir().unwrap();
    let zsv = compress(dir.path(), &model);
    for w in &model[..7] {
        check_own(&zsv, &weights, &w.name);
    }
    // Thin: raw, as before.
    let thin = zsv.tensor("k_proj.weight").unwrap();
    assert!(matches!(thin.encoding, Encoding::Raw(_)));
}

#[test]
fn incomplete_or_mismatched_groups_keep_their_own_bases() {
    let dir = tempfile::tempdir().unwrap();
    let q = |base: u8, rows: usize, cols: usize, name: &str| {
        Weight::new(
            name,
            &[rows, cols],
            trained_at(base, rows, cols, base as u64),
        )
    };
    let (qn, kn, vn) = (
        "l.self_attn.q_proj.weight",
        "l.self_attn.k_proj.weight",
        "l.self_attn.v_proj.weight",
    );
    let cases: [(&str, Vec<Weight>); 4] = [
        (
            "v_proj missing",
            vec![q(119, HIDDEN, HIDDEN, qn), q(121, KV, HIDDEN, kn)],
        ),
        (
            "k_proj with other columns",
            vec![
                q(119, HIDDEN, HIDDEN, qn),
                q(121, KV, 384, kn),
                q(120, KV, HIDDEN, vn),
            ],
        ),
        (
            "v_proj of another prefix",
            vec![
                q(119, HIDDEN, HIDDEN, qn),
                q(121, KV, HIDDEN, kn),
                q(120, KV, HIDDEN, "m.self_attn.v_proj.weight"),
            ],
        ),
        (
            "k_proj stored raw (thin)",
            vec![
                q(119, HIDDEN, HIDDEN, qn),
                q(121, 2, HIDDEN, kn),
                q(121, KV, HIDDEN, vn),
            ],
        ),
    ];
    for (i, (case, model)) in cases.iter().enumerate() {
        let sub = dir.path().join(i.to_string());
        std::fs::create_dir(&sub).unwrap();
        let weights = by_name(model);
        let zsv = compress(&sub, model);
        let mut bases = vec![];
        for w in model {
            let entry = zsv.tensor(&w.name).unwrap();
            if matches!(entry.encoding, Encoding::Tiles(_)) {
                check_own(&zsv, &weights, &w.name);
                bases.push(w.own_base());
            }
        }
        assert!(bases.iter().any(|&b| b != bases[0]), "{case}: {bases:?}");
    }
}

#[test]
fn tensors_cast_to_bf16_are_grouped_too() {
    let model: Vec<Weight> = llama_block(0, [119, 121, 120, 119], [118, 119, 118], 7);
    let weights = by_name(&model);
    // The same values as F32 (exact), rounded back to BF16 by --cast-bf16.
    let tensors: Vec<Tensor> = model
        .iter()
        .map(|w| {
            let f: Vec<f32> = w.values.iter().map(|v| v.to_f32()).collect();
            Tensor::f32(&w.name, &w.shape, &f)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = (dir.path().join("f32.safetensors"), dir.path().join("m.zsv"));
    st::write(&input, &tensors, None);
    let cast = CompressOptions { cast_bf16: true };
    compress_file(&input, &out, cast, |_| {}).unwrap();
    verify_file(&input, &out).unwrap();
    let zsv = ZsvFile::open(&out).unwrap();
    for g in groups(0) {
        check_group(&zsv, &weights, &g);
    }
}

#[test]
fn directory_shards_are_grouped_file_by_file() {
    let model = llama_model();
    let weights = by_name(&model);
    let dir = tempfile::tempdir().unwrap();
    let (root, packed, back) = (
        dir.path().join("m"),
        dir.path().join("p"),
        dir.path().join("b"),
    );
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("config.json"), b"{}").unwrap();
    // Layer 1's v_proj goes into the second shard with the rest of layer 1:
    // its q/k/v group is split, its gate/up group is not.
    let split = model
        .iter()
        .position(|w| w.name == "model.layers.1.self_attn.v_proj.weight")
        .unwrap();
    write(
        &root.join("model-00001-of-00002.safetensors"),
        &model[..split],
    );
    write(
        &root.join("model-00002-of-00002.safetensors"),
        &model[split..],
    );
    compress_dir(&root, &packed, CompressOptions::default(), |_| {}, |_| {}).unwrap();
    verify_dir(&root, &packed, |_| {}).unwrap();
    let r = decompress_dir(&packed, &back, |_| {}, |_| {}).unwrap();
    assert_eq!(r.identical_files, 3);
    let first = ZsvFile::open(packed.join("model-00001-of-00002.zsv")).unwrap();
    let second = ZsvFile::open(packed.join("model-00002-of-00002.zsv")).unwrap();
    let [qkv0, gate_up0] = groups(0);
    let [qkv1, gate_up1] = groups(1);
    check_group(&first, &weights, &qkv0);
    check_group(&first, &weights, &gate_up0);
    check_group(&second, &weights, &gate_up1);
    check_own(&first, &weights, &qkv1[0]);
    check_own(&first, &weights, &qkv1[1]);
    check_own(&second, &weights, &qkv1[2]);
}

/// Bytes of the BF16 matrices and of their tiles, every section counted.
#[derive(Default)]
struct Size {
    bf16: usize,
    tiles: usize,
}

impl Size {
    fn add(&mut self, m: &CompressedMatrix) {
        self.bf16 += m.original_bytes();
        self.tiles += m.compressed_bytes();
    }

    fn ratio(&self) -> f64 {
        self.bf16 as f64 / self.tiles as f64
    }
}

/// Compression ratio of `groups` of matrices, each encoded with its own base
/// and with its group's shared one: (own, shared).
fn cost(groups: &[Vec<&Weight>]) -> (Size, Size) {
    let (mut own, mut shared) = (Size::default(), Size::default());
    for g in groups {
        let mut sum = [0u64; 256];
        for w in g {
            for (s, c) in sum.iter_mut().zip(exponent_histogram(&w.values)) {
                *s += c;
            }
        }
        let base = best_window_base(&sum);
        for w in g {
            let (rows, cols) = (w.shape[0], w.shape[1]);
            own.add(&CompressedMatrix::encode(&w.values, rows, cols).unwrap());
            shared.add(&CompressedMatrix::encode_with_base(&w.values, rows, cols, base).unwrap());
        }
    }
    (own, shared)
}

/// Prints the ratio with and without the shared base (docs/FORMAT.md
/// §1.6): on the synthetic model, and on MiniLM's query/key/value had they
/// Llama names (they have not: MiniLM itself is compressed as before).
#[test]
fn what_sharing_a_base_costs() {
    let model = llama_model();
    let weights = by_name(&model);
    let groups: Vec<Vec<&Weight>> = (0..2)
        .flat_map(groups)
        .map(|g| g.iter().map(|n| weights[n.as_str()]).collect())
        .collect();
    let (own, shared) = cost(&groups);
    let rest = model
        .iter()
        .filter(|w| w.shape.len() == 2 && !groups.iter().flatten().any(|g| g.name == w.name));
    let mut others = Size::default();
    for w in rest {
        others.add(&CompressedMatrix::encode(&w.values, w.shape[0], w.shape[1]).unwrap());
    }
    let all = |s: &Size| (s.bf16 + others.bf16) as f64 / (s.tiles + others.tiles) as f64;
    println!(
        "synthetic Llama (2 blocks, bases 1-2 apart): stacked projections {:.4}x own bases, \
         {:.4}x shared ({:+.2}%); all matrices {:.4}x -> {:.4}x",
        own.ratio(),
        shared.ratio(),
        100.0 * (shared.ratio() / own.ratio() - 1.0),
        all(&own),
        all(&shared)
    );
    assert!(shared.ratio() <= own.ratio());
    assert!(shared.ratio() > 0.9 * own.ratio());

    let Some(path) = zipserv_tests::minilm::model_file_or_skip("minilm shared base") else {
        return;
    };
    let st = SafetensorsFile::open(&path).unwrap();
    let plan = Plan::new(&st, CompressOptions { cast_bf16: true }).unwrap();
    assert!(
        stack_groups(&plan.tensors).is_empty(),
        "MiniLM has BERT names"
    );
    // Its query/key/value per layer, as if they were q/k/v.
    let bf16_of = |name: String| {
        let t = st.tensors().iter().find(|t| t.name == name).unwrap();
        let f: Vec<bf16> = st
            .read(t)
            .unwrap()
            .chunks_exact(4)
            .map(|c| bf16::from_f32(f32::from_le_bytes(c.try_into().unwrap())))
            .collect();
        Weight::new(name, &t.shape, f)
    };
    let layers: Vec<Vec<Weight>> = (0..6)
        .map(|l| {
            ["query", "key", "value"]
                .iter()
                .map(|x| bf16_of(format!("encoder.layer.{l}.attention.self.{x}.weight")))
                .collect()
        })
        .collect();
    let spread: Vec<Vec<u8>> = layers
        .iter()
        .map(|g| g.iter().map(Weight::own_base).collect())
        .collect();
    let groups: Vec<Vec<&Weight>> = layers.iter().map(|g| g.iter().collect()).collect();
    let (own, shared) = cost(&groups);
    let (own0, shared0) = cost(&groups[..1]);
    println!(
        "MiniLM query/key/value grouped (bases {spread:?}): {:.4}x own bases, {:.4}x shared \
         ({:+.2}%); layer 0 alone {:.4}x -> {:.4}x ({:+.2}%)",
        own.ratio(),
        shared.ratio(),
        100.0 * (shared.ratio() / own.ratio() - 1.0),
        own0.ratio(),
        shared0.ratio(),
        100.0 * (shared0.ratio() / own0.ratio() - 1.0)
    );
    assert!(shared.ratio() <= own.ratio());
}
