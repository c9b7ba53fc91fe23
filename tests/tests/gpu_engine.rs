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
use zipserv_engine::kernels::{self, Rows, StepState};
use zipserv_engine::kv_cache::KvCache;
use zipserv_engine::linear::{Linear, LinearWeights};
use zipserv_engine::{Sampling, rope};
use zipserv_format::CompressedMatrix;
use zipserv_format::rng::{SplitMix64, fresh_seed};
use zipserv_gpu::{DeviceWeights, Gpu};
use zipserv_kernels::engine::math::bf16_to_f32;
use zipserv_kernels::engine::rope::{cache_offset, rotate, table_offset};
use zipserv_kernels::engine::{rmsnorm, sample, swiglu};
use zipserv_tests::data::{activations, weight_like};
use zipserv_tests::gpu_or_skip;

/// Uploads, and waits for the upload: it runs on the legacy stream, which
/// the kernels' non-blocking stream does not wait for.
fn up<T: cust::memory::DeviceCopy>(v: &[T]) -> DeviceBuffer<T> {
    let b = DeviceBuffer::from_slice(v).unwrap();
    cust::context::CurrentContext::synchronize().unwrap();
    b
}

fn down<T: cust::memory::DeviceCopy + Default + Clone>(gpu: &Gpu, b: &DeviceBuffer<T>) -> Vec<T> {
    gpu.synchronize().unwrap();
    let mut host = vec![T::default(); b.len()];
    b.copy_to(&mut host[..]).unwrap();
    host
}

fn bits(v: &[bf16]) -> Vec<u16> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// NaN-poisoned BF16 buffer: an element a kernel fails to write cannot match.
fn poisoned(n: usize) -> DeviceBuffer<bf16> {
    up(&vec![bf16::from_bits(0x7FC1); n])
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
            LinearWeights::Bf16(up(&table)),
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
            kernels::embed(&gpu, &lin, &up(&ids), ids.len(), &mut out).unwrap();
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
    let (rows, cols, eps) = (7, 1000, 1e-5f32);
    let h = activations(&mut rng, rows * cols);
    let delta = activations(&mut rng, rows * cols);
    let w = weight_like(&mut rng, cols, 2.0);
    let mut g_h = up(&h);
    let mut out = poisoned(rows * cols);
    kernels::add_rmsnorm(
        &gpu,
        &mut g_h,
        Some(&up(&delta)),
        &up(&w),
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
            "seed {seed}: residual row {r}"
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
                "seed {seed}: ({r}, {c}) {g} vs {want}"
            );
        }
    }
    // SwiGLU, bit for bit.
    let (gate, upv) = (activations(&mut rng, 5000), activations(&mut rng, 5000));
    let mut out = poisoned(5000);
    kernels::swiglu(&gpu, &up(&gate), &up(&upv), &mut out, 5000).unwrap();
    let want: Vec<u16> = gate
        .iter()
        .zip(&upv)
        .map(|(g, u)| swiglu::swiglu(g.to_bits(), u.to_bits()))
        .collect();
    assert_eq!(bits(&down(&gpu, &out)), want, "seed {seed}: swiglu");
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
    let seed = fresh_seed();
    let mut rng = SplitMix64::new(seed);
    let c = small_config();
    let (hd, half, kvh, group) = (c.head_dim, c.head_dim / 2, c.kv_heads, c.heads / c.kv_heads);
    let lengths = [5usize, 1, 9];
    let capacity = 12;
    let table = rope::table(&rope::inverse_frequencies(&c), capacity);
    let g_table = up(&table);
    let mut cache = KvCache::new(&c, lengths.len(), capacity).unwrap();
    let layout = zipserv_engine::batch::PrefillLayout::new(&lengths).unwrap();
    // CPU copies of the cache, [seq][kv head][pos] → head vector.
    let mut ck = vec![vec![vec![Vec::new(); capacity]; kvh]; lengths.len()];
    let mut cv = ck.clone();
    let mut check_phase = |row_seq: Vec<u32>, row_pos: Vec<u32>, what: &str| {
        let n = row_seq.len();
        let q = activations(&mut rng, n * c.q_dim());
        let k = activations(&mut rng, n * c.kv_dim());
        let v = activations(&mut rng, n * c.kv_dim());
        let (g_seq, g_pos) = (up(&row_seq), up(&row_pos));
        let rows = Rows {
            count: n,
            seq: &g_seq,
            pos: &g_pos,
        };
        let mut g_q = up(&q);
        kernels::rope_kv(
            &gpu,
            &c,
            &rows,
            &mut g_q,
            &up(&k),
            &up(&v),
            &g_table,
            &mut cache,
            0,
        )
        .unwrap();
        let mut out = poisoned(n * c.q_dim());
        kernels::attention(&gpu, &c, &rows, &g_q, &mut out, &cache, 0).unwrap();
        let (got_q, got) = (down(&gpu, &g_q), down(&gpu, &out));
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
        let g_k = down(&gpu, &cache.k[0]);
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
        "ragged prefill",
    );
    let seqs: Vec<u32> = (0..lengths.len() as u32).collect();
    let pos: Vec<u32> = lengths.iter().map(|&l| l as u32).collect();
    check_phase(seqs, pos, "decode step");
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
    let g_logits = up(&logits);
    let probs = up(&vec![0f32; batch * vocab]);
    let mut counter = vec![0u32; 1];
    counter[0] = step;
    let g_counter = up(&counter);
    let tokens = up(&vec![u32::MAX; batch]);
    let history = up(&vec![u32::MAX; 10 * batch]);
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
