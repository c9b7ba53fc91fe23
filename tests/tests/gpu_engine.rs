//! The engine's kernels on a real GPU against CPU references built from the
//! same per-element functions: embedding (both forms) and the residual add
//! bit for bit, RMSNorm within a BF16 step, RoPE + KV cache bit for bit,
//! attention (ragged prefill and decode, GQA) against f64, token selection
//! against the CPU version. Skipped (with a message) without a GPU.

// Heads, positions and dimensions index several arrays at once.
#![allow(clippy::needless_range_loop)]

use std::path::Path;

use cust::memory::{CopyDestination, DeviceBuffer};
use half::bf16;
use zipserv_engine::config::ModelConfig;
use zipserv_engine::kernels::{self, AttnChoice, AttnKernel, Parts, Rows, StepState};
use zipserv_engine::kv_cache::KvCache;
use zipserv_engine::linear::{Linear, LinearWeights};
use zipserv_engine::stacked::{PartLayout, part_layouts};
use zipserv_engine::{Sampling, rope};
use zipserv_format::CompressedMatrix;
use zipserv_format::rng::{SplitMix64, fresh_seed};
use zipserv_gpu::{DeviceWeights, Gpu};
use zipserv_kernels::engine::math::bf16_to_f32;
use zipserv_kernels::engine::rope::{cache_offset, rotate, table_offset};
use zipserv_kernels::engine::{rmsnorm, sample, swiglu};
use zipserv_tests::data::{activations, weight_like};
use zipserv_tests::{gpu_or_skip, upload};

fn down<T: cust::memory::DeviceCopy + Default + Clone>(gpu: &Gpu, b: &DeviceBuffer<T>) -> Vec<T> {
    gpu.synchronize().unwrap();
    let mut host = vec![T::default(); b.len()];
    b.copy_to(&mut host[..]).unwrap();
    host
}

fn bits(v: &[bf16]) -> Vec<u16> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `parts` (`n` rows of `widths[i]` values each) in one buffer, side by
/// side per row when `stacked`, else one block after another, the gaps
/// poisoned; with the layouts.
fn lay_out(
    parts: &[&[bf16]],
    widths: &[usize],
    n: usize,
    stacked: bool,
) -> (Vec<bf16>, Vec<PartLayout>) {
    let layouts = part_layouts(widths, n, stacked);
    let mut all = vec![bf16::from_bits(0x7FC1); n * widths.iter().sum::<usize>()];
    for ((part, &w), l) in parts.iter().zip(widths).zip(&layouts) {
        for t in 0..n {
            all[l.offset + t * l.stride..][..w].copy_from_slice(&part[t * w..][..w]);
        }
    }
    (all, layouts)
}

/// Part `i`'s `n` rows of `width` values back out of a laid-out buffer.
fn part_of(all: &[bf16], l: PartLayout, n: usize, width: usize) -> Vec<bf16> {
    (0..n)
        .flat_map(|t| all[l.offset + t * l.stride..][..width].to_vec())
        .collect()
}

/// NaN-poisoned BF16 buffer: an element a kernel fails to write cannot match.
fn poisoned(n: usize) -> DeviceBuffer<bf16> {
    upload(&vec![bf16::from_bits(0x7FC1); n])
}

#[test]
fn embedding_rows_from_bf16_and_compressed_tables() {
    let Some(gpu) = gpu_or_skip("embedding_rows_from_bf16_and_compressed_tables") else {
        return;
    };
    let seed = fresh_seed();
    let mut rng = SplitMix64::new(seed);
    for &(vocab, hidden) in &[(300, 200), (64, 128), (1000, 576)] {
        let table = weight_like(&mut rng, vocab * hidden, 0.05);
        let ids: Vec<u32> = (0..37)
            .map(|_| (rng.next_u64() % vocab as u64) as u32)
            .collect();
        let m = CompressedMatrix::encode(&table, vocab, hidden).unwrap();
        let forms = [
            LinearWeights::Bf16(upload(&table)),
            LinearWeights::Compressed(DeviceWeights::upload(&gpu, &m).unwrap()),
        ];
        for weights in forms {
            let lin = Linear {
                name: "embed".into(),
                rows: vocab,
                cols: hidden,
                weights,
            };
            let mut out = poisoned(ids.len() * hidden);
            kernels::embed(&gpu, &lin, &upload(&ids), ids.len(), &mut out).unwrap();
            let got = down(&gpu, &out);
            for (r, &id) in ids.iter().enumerate() {
                let want = &table[id as usize * hidden..][..hidden];
                assert_eq!(
                    bits(&got[r * hidden..][..hidden]),
                    bits(want),
                    "seed {seed}, {vocab}x{hidden}, compressed {}, row {r} (id {id})",
                    lin.is_compressed()
                );
            }
        }
    }
}

#[test]
fn residual_add_rmsnorm_and_swiglu_match_the_cpu() {
    let Some(gpu) = gpu_or_skip("residual_add_rmsnorm_and_swiglu_match_the_cpu") else {
        return;
    };
    let seed = fresh_seed();
    let mut rng = SplitMix64::new(seed);
    // 1000 columns take the 16-byte path, 1003 the scalar one.
    for cols in [1000usize, 1003] {
        let (rows, eps) = (7, 1e-5f32);
        let h = activations(&mut rng, rows * cols);
        let delta = activations(&mut rng, rows * cols);
        let w = weight_like(&mut rng, cols, 2.0);
        let mut g_h = upload(&h);
        let mut out = poisoned(rows * cols);
        kernels::add_rmsnorm(
            &gpu,
            &mut g_h,
            Some(&upload(&delta)),
            &upload(&w),
            &mut out,
            rows,
            cols,
            eps,
        )
        .unwrap();
        let (got_h, got) = (down(&gpu, &g_h), down(&gpu, &out));
        for r in 0..rows {
            let row: Vec<u16> = (0..cols)
                .map(|c| {
                    rmsnorm::residual_add(h[r * cols + c].to_bits(), delta[r * cols + c].to_bits())
                })
                .collect();
            assert_eq!(
                bits(&got_h[r * cols..][..cols]),
                row,
                "seed {seed}: residual row {r}, {cols} columns"
            );
            let ss: f64 = row.iter().map(|&v| (bf16_to_f32(v) as f64).powi(2)).sum();
            let inv = rmsnorm::inverse_rms(ss as f32, cols as u32, eps);
            for c in 0..cols {
                let want = bf16_to_f32(rmsnorm::normalize(row[c], w[c].to_bits(), inv));
                let g = got[r * cols + c].to_f32();
                // The GPU sums the squares in another order: at most one BF16
                // step apart.
                assert!(
                    (g - want).abs() <= want.abs() / 128.0 + 1e-6,
                    "seed {seed}: ({r}, {c}) of {cols} columns: {g} vs {want}"
                );
            }
        }
    }
    // SwiGLU, bit for bit, from a stacked gate/up product and from two
    // separate ones.
    let (rows, cols) = (5, 1000);
    let (gate, upv) = (
        activations(&mut rng, rows * cols),
        activations(&mut rng, rows * cols),
    );
    let want: Vec<u16> = gate
        .iter()
        .zip(&upv)
        .map(|(g, u)| swiglu::swiglu(g.to_bits(), u.to_bits()))
        .collect();
    for stacked in [true, false] {
        let (all, layouts) = lay_out(&[&gate, &upv], &[cols, cols], rows, stacked);
        let g_all = upload(&all);
        let parts = Parts {
            buffer: &g_all,
            layouts: &layouts,
        };
        let mut out = poisoned(rows * cols);
        kernels::swiglu(&gpu, &parts, &mut out, rows, cols).unwrap();
        assert_eq!(
            bits(&down(&gpu, &out)),
            want,
            "seed {seed}: swiglu, stacked {stacked}"
        );
    }
}

fn small_config() -> ModelConfig {
    ModelConfig::from_json(
        br#"{"hidden_size": 384, "intermediate_size": 512, "num_attention_heads": 6,
        "num_key_value_heads": 2, "num_hidden_layers": 1, "vocab_size": 100,
        "rope_theta": 31337.0}"#,
        Path::new("test config"),
    )
    .unwrap()
}

/// f64 attention of one query head against cached keys/values 0..=pos.
fn attention_reference(q: &[f32], keys: &[Vec<f32>], values: &[Vec<f32>], scale: f64) -> Vec<f64> {
    let s: Vec<f64> = keys
        .iter()
        .map(|k| {
            q.iter()
                .zip(k)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum::<f64>()
                * scale
        })
        .collect();
    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
    let z: f64 = e.iter().sum();
    (0..q.len())
        .map(|d| {
            e.iter()
                .zip(values)
                .map(|(p, v)| p * v[d] as f64)
                .sum::<f64>()
                / z
        })
        .collect()
}

#[test]
fn rope_cache_and_attention_match_the_cpu_for_prefill_and_decode() {
    let Some(gpu) = gpu_or_skip("rope_cache_and_attention_match_the_cpu_for_prefill_and_decode")
    else {
        return;
    };
    // GQA with head_dim 64 (8 dimensions per lane), and plain multi-head
    // attention with head_dim 32 (1 dimension per lane).
    let mha = ModelConfig::from_json(
        br#"{"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4,
        "num_key_value_heads": 4, "num_hidden_layers": 1, "vocab_size": 100}"#,
        Path::new("test config"),
    )
    .unwrap();
    // The tensor-core kernel's two head dimensions, and a group of 16
    // (both halves of its mma rows).
    let d128 = ModelConfig::from_json(
        br#"{"hidden_size": 512, "intermediate_size": 256, "num_attention_heads": 4,
        "num_key_value_heads": 1, "num_hidden_layers": 1, "vocab_size": 100}"#,
        Path::new("test config"),
    )
    .unwrap();
    let group16 = ModelConfig::from_json(
        br#"{"hidden_size": 1024, "intermediate_size": 256, "num_attention_heads": 16,
        "num_key_value_heads": 1, "num_hidden_layers": 1, "vocab_size": 100}"#,
        Path::new("test config"),
    )
    .unwrap();
    for choice in [AttnChoice::Heads, AttnChoice::Mma] {
        kernels::set_attention_choice(choice);
        for c in [&small_config(), &d128, &group16] {
            rope_and_attention_check(&gpu, c, &[5, 1, 140], 160);
        }
        // A long context: a decode step's 37 splits, more than a warp's
        // lanes (the tensor-core kernel's merge takes two per lane).
        rope_and_attention_check(&gpu, &group16, &[5, 1, 1100], 1200);
    }
    // head_dim 32: the block-per-head-chunk kernel only.
    kernels::set_attention_choice(AttnChoice::Auto);
    rope_and_attention_check(&gpu, &mha, &[5, 1, 140], 160);
    let plan = kernels::attention_plan(&gpu, &mha, 1, 160).unwrap();
    assert!(matches!(plan.kernel, AttnKernel::Heads(_)), "{plan:?}");
    kernels::set_attention_choice(AttnChoice::Mma);
    let err = kernels::attention_plan(&gpu, &mha, 1, 160)
        .unwrap_err()
        .to_string();
    assert!(err.contains("head_dim 64 and 128"), "{err}");
    kernels::set_attention_choice(AttnChoice::Auto);
}

/// Prefill of sequences `lengths` into a cache of `capacity` positions,
/// then two decode steps, each checked against the CPU.
fn rope_and_attention_check(gpu: &Gpu, c: &ModelConfig, lengths: &[usize], capacity: usize) {
    let seed = fresh_seed();
    let mut rng = SplitMix64::new(seed);
    let c = c.clone();
    let (hd, half, kvh, group) = (c.head_dim, c.head_dim / 2, c.kv_heads, c.heads / c.kv_heads);
    // The prefill (146 rows at capacity 160) fills the card without
    // splits; the decode step (3 rows) splits the positions.
    let table = rope::table(&rope::inverse_frequencies(&c), capacity);
    let g_table = upload(&table);
    let mut cache = KvCache::new(&c, lengths.len(), capacity).unwrap();
    let layout = zipserv_engine::batch::PrefillLayout::new(lengths).unwrap();
    // CPU copies of the cache, [seq][kv head][pos] → head vector.
    let mut ck = vec![vec![vec![Vec::new(); capacity]; kvh]; lengths.len()];
    let mut cv = ck.clone();
    let mut check_phase = |row_seq: Vec<u32>, row_pos: Vec<u32>, stacked: bool, what: &str| {
        let n = row_seq.len();
        let q = activations(&mut rng, n * c.q_dim());
        let k = activations(&mut rng, n * c.kv_dim());
        let v = activations(&mut rng, n * c.kv_dim());
        let (g_seq, g_pos) = (upload(&row_seq), upload(&row_pos));
        let rows = Rows {
            count: n,
            seq: &g_seq,
            pos: &g_pos,
        };
        let widths = [c.q_dim(), c.kv_dim(), c.kv_dim()];
        let (all, layouts) = lay_out(&[&q, &k, &v], &widths, n, stacked);
        let g_qkv = upload(&all);
        let qkv = Parts {
            buffer: &g_qkv,
            layouts: &layouts,
        };
        kernels::rope_kv(gpu, &c, &rows, &qkv, &g_table, &mut cache, 0).unwrap();
        let plan = kernels::attention_plan(gpu, &c, n, capacity).unwrap();
        let splits = plan.splits;
        println!(
            "{what}: {n} rows, {splits} splits, kernel {:?}, stacked Q/K/V {stacked}",
            plan.kernel
        );
        let (words, arrivals) = kernels::attention_scratch(gpu, &c, n, capacity).unwrap();
        let mut workspace = upload(&vec![f32::NAN; words.max(1)]);
        let mut counters = upload(&vec![0u32; arrivals.max(1)]);
        let mut out = poisoned(n * c.q_dim());
        kernels::attention(
            gpu,
            &c,
            &rows,
            &qkv,
            &mut out,
            &mut workspace,
            &mut counters,
            &cache,
            0,
        )
        .unwrap();
        // The counters are left zero for the next launch.
        assert!(
            down(gpu, &counters).iter().all(|&c| c == 0),
            "seed {seed}, {what}: arrival counters not reset"
        );
        let got_q = part_of(&down(gpu, &g_qkv), layouts[0], n, c.q_dim());
        let got = down(gpu, &out);
        let turn = |x: &[bf16], pos: usize| -> Vec<u16> {
            let mut y = vec![0u16; hd];
            for i in 0..half {
                let t = table_offset(pos, i, half);
                let (lo, hi) = rotate(
                    x[i].to_bits(),
                    x[i + half].to_bits(),
                    table[t],
                    table[t + 1],
                );
                (y[i], y[i + half]) = (lo, hi);
            }
            y
        };
        let mut want_q = Vec::new();
        for r in 0..n {
            let (s, p) = (row_seq[r] as usize, row_pos[r] as usize);
            for h in 0..c.heads {
                want_q.extend(turn(&q[(r * c.heads + h) * hd..][..hd], p));
            }
            for h in 0..kvh {
                let at = (r * kvh + h) * hd;
                ck[s][h][p] = turn(&k[at..][..hd], p)
                    .iter()
                    .map(|&b| bf16_to_f32(b))
                    .collect();
                cv[s][h][p] = v[at..][..hd].iter().map(|x| x.to_f32()).collect();
            }
        }
        assert_eq!(bits(&got_q), want_q, "seed {seed}, {what}: rotated queries");
        let g_k = down(gpu, &cache.k[0]);
        for r in 0..n {
            let (s, p) = (row_seq[r] as usize, row_pos[r] as usize);
            for h in 0..kvh {
                let o = cache_offset(s, h, p, kvh, capacity, hd);
                let cached: Vec<f32> = g_k[o..][..hd].iter().map(|x| x.to_f32()).collect();
                assert_eq!(
                    cached, ck[s][h][p],
                    "seed {seed}, {what}: cached key ({s}, {h}, {p})"
                );
            }
        }
        let (mut num, mut den) = (0f64, 0f64);
        for r in 0..n {
            let (s, p) = (row_seq[r] as usize, row_pos[r] as usize);
            for h in 0..c.heads {
                let qh: Vec<f32> = want_q[(r * c.heads + h) * hd..][..hd]
                    .iter()
                    .map(|&b| bf16_to_f32(b))
                    .collect();
                let kv = h / group;
                let want = attention_reference(
                    &qh,
                    &ck[s][kv][..=p],
                    &cv[s][kv][..=p],
                    1.0 / (hd as f64).sqrt(),
                );
                for d in 0..hd {
                    let g = got[(r * c.heads + h) * hd + d].to_f32() as f64;
                    assert!(
                        g.is_finite(),
                        "seed {seed}, {what}: unwritten output ({r}, {h}, {d})"
                    );
                    num += (g - want[d]).powi(2);
                    den += want[d].powi(2);
                }
            }
        }
        let rel = (num / den).sqrt();
        assert!(
            rel < 4e-3,
            "seed {seed}, {what}: attention relative error {rel:.2e}"
        );
        println!("{what}: attention relative error {rel:.2e} (BF16 output)");
    };
    check_phase(
        layout.row_seq.clone(),
        layout.row_pos.clone(),
        true,
        "ragged prefill",
    );
    let seqs: Vec<u32> = (0..lengths.len() as u32).collect();
    let pos: Vec<u32> = lengths.iter().map(|&l| l as u32).collect();
    check_phase(seqs.clone(), pos.clone(), false, "decode step");
    let next: Vec<u32> = pos.iter().map(|p| p + 1).collect();
    check_phase(seqs, next, true, "second decode step");
}

#[test]
fn token_selection_matches_the_cpu() {
    let Some(gpu) = gpu_or_skip("token_selection_matches_the_cpu") else {
        return;
    };
    let seed = fresh_seed();
    let mut rng = SplitMix64::new(seed);
    let (batch, vocab, step) = (6usize, 5003usize, 7u32);
    let mut logits: Vec<f32> = (0..batch * vocab)
        .map(|_| rng.next_f32_signed() * 6.0)
        .collect();
    logits[2 * vocab + 17] = 50.0; // a sure token
    let g_logits = upload(&logits);
    let probs = upload(&vec![0f32; batch * vocab]);
    let mut counter = vec![0u32; 1];
    counter[0] = step;
    let g_counter = upload(&counter);
    let tokens = upload(&vec![u32::MAX; batch]);
    let history = upload(&vec![u32::MAX; 10 * batch]);
    let state = StepState {
        counter: &g_counter,
        tokens: &tokens,
        history: &history,
        max_steps: 10,
    };
    for sampling in [
        Sampling::GREEDY,
        Sampling::new(0.8, 0.9, seed).unwrap(),
        Sampling::new(1.3, 1.0, seed ^ 1).unwrap(),
    ] {
        kernels::select(&gpu, &g_logits, &probs, batch, vocab, &sampling, &state).unwrap();
        let got = down(&gpu, &tokens);
        let hist = down(&gpu, &history);
        let mut mismatches = 0;
        for b in 0..batch {
            let row = &logits[b * vocab..][..vocab];
            let u = sample::uniform(sampling.seed, b as u32, step);
            let want = sample::select_reference(row, sampling.temperature, sampling.top_p, u);
            assert_eq!(hist[step as usize * batch + b], got[b]);
            if got[b] != want {
                mismatches += 1;
            }
        }
        assert_eq!(got[2], 17, "seed {seed}, {sampling:?}");
        // A weight within rounding of the top-p threshold or of the draw may
        // fall the other way on the GPU's summation order; more than one in
        // six is a bug.
        assert!(
            mismatches <= 1,
            "seed {seed}, {sampling:?}: {mismatches} of {batch} differ"
        );
        if sampling.is_greedy() {
            assert_eq!(mismatches, 0, "seed {seed}: greedy");
        }
    }
}

/// A small random GQA model: stacked and separate Q/K/V and gate/up
/// products, BF16 and compressed, give the same prompt logits within BF16
/// rounding (a stacked product may sum in another order); stacking is on
/// for every group when asked. The prefill runs in several chunks (the
/// long prompt alone) and decode steps follow as a CUDA graph.
#[test]
fn stacked_and_separate_projections_agree_in_both_forms() {
    use zipserv_engine::model::{Model, Stacking, WeightForm};
    use zipserv_engine::source::RandomWeights;
    use zipserv_engine::{Generator, RunOptions};
    let Some(gpu) = gpu_or_skip("stacked_and_separate_projections_agree_in_both_forms") else {
        return;
    };
    let seed = fresh_seed();
    let config = ModelConfig::from_json(
        br#"{"hidden_size": 256, "intermediate_size": 640, "num_attention_heads": 8,
        "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 300,
        "rope_theta": 31337.0, "tie_word_embeddings": false}"#,
        Path::new("test config"),
    )
    .unwrap();
    let source = RandomWeights::new(config.clone(), seed);
    let mut rng = SplitMix64::new(seed ^ 1);
    let lengths = [
        7usize,
        3,
        zipserv_engine::generate::PREFILL_CHUNK_ROWS + 5,
        2,
    ];
    let prompts: Vec<Vec<u32>> = lengths
        .iter()
        .map(|&len| (0..len).map(|_| (rng.next_u64() % 300) as u32).collect())
        .collect();
    let options = RunOptions {
        max_new_tokens: 6,
        sampling: Sampling::new(0.0, 1.0, 1).unwrap(),
        graph: true,
        keep_logits: true,
        profile_step: false,
        context: None,
        stop_tokens: Vec::new(),
    };
    let mut runs = Vec::new();
    for form in [WeightForm::Bf16, WeightForm::Compressed] {
        for stacking in [Stacking::Stack, Stacking::Separate] {
            let model = Model::load(&gpu, &source, form, stacking, |_| {}).unwrap();
            let want_stacked = if stacking == Stacking::Stack { 4 } else { 0 };
            assert_eq!(
                model.stacked_groups(),
                want_stacked,
                "seed {seed}: {form:?} {stacking:?}: {:?}",
                model.unstacked
            );
            let out = Generator::new(&gpu, &model)
                .unwrap()
                .run(&prompts, &options)
                .unwrap();
            runs.push((format!("{form:?} {stacking:?}"), out.logits));
        }
    }
    let (base_name, base) = &runs[0];
    for (name, logits) in &runs[1..] {
        // Later steps depend on the tokens chosen, which a near-tie may
        // flip: compare the prompt's logits, which depend on no choice.
        let (a, b) = (&base[0], &logits[0]);
        let (mut num, mut den) = (0f64, 0f64);
        for (x, y) in a.iter().zip(b) {
            num += (*x as f64 - *y as f64).powi(2);
            den += (*x as f64).powi(2);
        }
        let rel = (num / den).sqrt();
        println!("{name} vs {base_name}: prompt logits relative error {rel:.2e}");
        assert!(rel < 2e-2, "seed {seed}: {name} vs {base_name}: {rel:.2e}");
    }
}

/// Stop tokens: each sequence ends at the first it generates (kept), the
/// run at the first look after every sequence has ended, and the tokens
/// before are those of a run without stop tokens (greedy).
#[test]
fn sequences_end_at_their_first_stop_token() {
    use zipserv_engine::model::{Model, Stacking, WeightForm};
    use zipserv_engine::source::RandomWeights;
    use zipserv_engine::stop::STOP_CHECK_STEPS;
    use zipserv_engine::{Generator, RunOptions};
    let Some(gpu) = gpu_or_skip("sequences_end_at_their_first_stop_token") else {
        return;
    };
    let seed = fresh_seed();
    let config = ModelConfig::from_json(
        br#"{"hidden_size": 256, "intermediate_size": 640, "num_attention_heads": 8,
        "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 300,
        "tie_word_embeddings": false}"#,
        Path::new("test config"),
    )
    .unwrap();
    let source = RandomWeights::new(config.clone(), seed);
    let model = Model::load(&gpu, &source, WeightForm::Bf16, Stacking::Stack, |_| {}).unwrap();
    let mut generator = Generator::new(&gpu, &model).unwrap();
    let mut rng = SplitMix64::new(seed ^ 2);
    let prompts: Vec<Vec<u32>> = [4usize, 2, 6]
        .iter()
        .map(|&len| (0..len).map(|_| (rng.next_u64() % 300) as u32).collect())
        .collect();
    let steps = 30;
    let run = |generator: &mut Generator<'_>, stop: Vec<u32>| {
        let options = RunOptions {
            max_new_tokens: steps,
            sampling: Sampling::GREEDY,
            graph: true,
            keep_logits: false,
            profile_step: false,
            context: None,
            stop_tokens: stop,
        };
        generator.run(&prompts, &options).unwrap()
    };
    let full = run(&mut generator, Vec::new());
    assert_eq!(full.steps_run, steps);
    assert!(full.tokens.iter().all(|t| t.len() == steps));
    assert!(full.ended.iter().all(|&e| !e));
    // Sequence 0's token of step 5, and every token (all end at once).
    for stop in [vec![full.tokens[0][5]], (0..300).collect::<Vec<u32>>()] {
        let got = run(&mut generator, stop.clone());
        let ends: Vec<Option<usize>> = full
            .tokens
            .iter()
            .map(|t| t.iter().position(|x| stop.contains(x)))
            .collect();
        for (s, end) in ends.iter().enumerate() {
            let want = &full.tokens[s][..end.map_or(steps, |e| e + 1)];
            assert_eq!(
                got.tokens[s],
                want,
                "seed {seed}, sequence {s}, stop {:?}",
                &stop[..1]
            );
            assert_eq!(got.ended[s], end.is_some());
        }
        // Looks after steps 1 and 2, then every STOP_CHECK_STEPS.
        let want_steps = match ends
            .iter()
            .map(|e| e.map(|e| e + 1))
            .collect::<Option<Vec<_>>>()
        {
            Some(all) => match all.into_iter().max().unwrap() {
                last @ (1 | 2) => last,
                last => last.next_multiple_of(STOP_CHECK_STEPS).min(steps),
            },
            None => steps,
        };
        assert_eq!(got.steps_run, want_steps, "seed {seed}: ends {ends:?}");
        println!(
            "stop {:?}…: ends {ends:?}, {} steps run",
            &stop[..1],
            got.steps_run
        );
    }
}
