//! Projections an inference engine stacks into one matrix, and the one
//! window base compression gives each such group.
//!
//! A Llama-family engine (ours: `engine/`) runs a block's q/k/v projections
//! as one product, and its gate/up projections as another, by joining the
//! compressed matrices with [`CompressedMatrix::stack_rows`]. That needs one
//! window base in every part, while [`CompressedMatrix::encode`] picks each
//! matrix's base from its own exponents, so parts with slightly different
//! scales (the norm on real models) get bases one or two apart and cannot be
//! stacked. Compression therefore encodes the members of each group with
//! the base that is best for all of them together: [`best_window_base`] of
//! their summed [`exponent_histogram`]s (section 1.6 of docs/FORMAT.md).

use std::collections::HashMap;

use safetensors::Dtype;

use super::file::tile_shape;
use super::plan::{Plan, Values};
use crate::codec::{CompressedMatrix, best_window_base, exponent_histogram};
use crate::error::Result;
use crate::st::{SafetensorsFile, TensorInfo};

/// The tensor names, after `<prefix>.`, of the matrices that are stacked
/// into one, in stacking order (Llama-family naming, as Hugging Face
/// `transformers` writes Llama, Mistral, Qwen2, SmolLM2, TinyLlama...).
const STACKED: [&[&str]; 2] = [
    &["q_proj.weight", "k_proj.weight", "v_proj.weight"],
    &["gate_proj.weight", "up_proj.weight"],
];

/// The groups of matrices in `tensors` that an engine stacks into one
/// product, as indices into `tensors` in stacking order, groups in the
/// order of their first member.
///
/// `<prefix>.q_proj.weight`, `<prefix>.k_proj.weight` and
/// `<prefix>.v_proj.weight` form a group, and so do `<prefix>.gate_proj.weight`
/// and `<prefix>.up_proj.weight`, when every member is listed, is a 2-D BF16
/// tensor (in a compression [`Plan`]'s tensors a tensor cast to BF16 counts
/// as BF16) and all have the same number of columns. Anything else (a
/// member missing, another dtype or rank, different columns) forms no
/// group, and its tensors are compressed on their own as before. Rows are
/// not compared: `stack_rows` also needs every part but the last to fill
/// whole row tiles (16 rows), which real projections do. Only the
/// tensors of one list (one safetensors file) are grouped: the shards of a
/// model directory are compressed one by one, so a group split across two
/// shards is not formed.
pub fn stack_groups(tensors: &[TensorInfo]) -> Vec<Vec<usize>> {
    let index: HashMap<&str, usize> = tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let matrix_cols = |i: usize| match tensors[i].shape[..] {
        [_, cols] if tensors[i].dtype == Dtype::BF16 => Some(cols),
        _ => None,
    };
    let mut groups = Vec::new();
    for t in tensors {
        for suffixes in STACKED {
            let Some(prefix) = t.name.strip_suffix(suffixes[0]) else {
                continue;
            };
            if !prefix.ends_with('.') {
                continue;
            }
            let members: Option<Vec<usize>> = suffixes
                .iter()
                .map(|s| index.get(format!("{prefix}{s}").as_str()).copied())
                .collect();
            let Some(members) = members else { continue };
            let cols: Option<Vec<usize>> = members.iter().map(|&i| matrix_cols(i)).collect();
            if cols.is_some_and(|c| c.iter().all(|&x| x == c[0])) {
                groups.push(members);
            }
        }
    }
    groups
}

/// Per tensor of `plan` (same order), the window base it is to be encoded
/// with when it belongs to a [`stack_groups`] group, `None` otherwise (the
/// encoder's own choice).
///
/// Reads every member of every group once, one tensor at a time, keeping
/// only its exponent histogram. A group is left alone (all `None`) when any
/// member would be stored raw: a shape whose tiles cannot be smaller than
/// its bytes (thin or tiny matrices), or values whose tiles would not be
/// smaller with their own base or with the shared one (computed from the
/// histograms, [`CompressedMatrix::compressed_bytes_for`]). So sharing a
/// base never changes which tensors are stored in the tile format, only
/// their sizes.
pub(crate) fn shared_bases(st: &SafetensorsFile, plan: &Plan) -> Result<Vec<Option<u8>>> {
    let mut bases = vec![None; plan.tensors.len()];
    'groups: for group in stack_groups(&plan.tensors) {
        let mut shapes = Vec::with_capacity(group.len());
        for &i in &group {
            match tile_shape(&plan.tensors[i].shape) {
                Some(shape) => shapes.push(shape),
                None => continue 'groups,
            }
        }
        let mut histograms = Vec::with_capacity(group.len());
        for &i in &group {
            let t = &st.tensors()[i];
            let Values::Bf16(weights) = Values::read(st, t, plan.cast[i])? else {
                continue 'groups;
            };
            histograms.push(exponent_histogram(&weights));
        }
        let mut sum = [0u64; 256];
        for h in &histograms {
            for (s, &c) in sum.iter_mut().zip(h) {
                *s = s.saturating_add(c);
            }
        }
        let base = best_window_base(&sum);
        let smaller = |(rows, cols): (usize, usize), h: &[u64; 256], base: u8| {
            let raw = rows.checked_mul(cols).and_then(|n| n.checked_mul(2));
            let tiles = CompressedMatrix::compressed_bytes_for(rows, cols, h, base);
            matches!((tiles, raw), (Some(tiles), Some(raw)) if tiles < raw)
        };
        let tiles_either_way = shapes
            .iter()
            .zip(&histograms)
            .all(|(&shape, h)| smaller(shape, h, best_window_base(h)) && smaller(shape, h, base));
        if tiles_either_way {
            for &i in &group {
                bases[i] = Some(base);
            }
        }
    }
    Ok(bases)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, dtype: Dtype, shape: &[usize]) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            begin: 0,
            end: 0,
        }
    }

    fn names(tensors: &[TensorInfo]) -> Vec<Vec<&str>> {
        stack_groups(tensors)
            .into_iter()
            .map(|g| g.iter().map(|&i| tensors[i].name.as_str()).collect())
            .collect()
    }

    const BF16: Dtype = Dtype::BF16;

    #[test]
    fn a_llama_block_has_two_groups_in_stacking_order() {
        let p = "model.layers.3";
        let t = [
            info(&format!("{p}.mlp.up_proj.weight"), BF16, &[96, 32]),
            info(&format!("{p}.self_attn.v_proj.weight"), BF16, &[16, 32]),
            info(&format!("{p}.self_attn.k_proj.weight"), BF16, &[16, 32]),
            info(&format!("{p}.self_attn.o_proj.weight"), BF16, &[32, 32]),
            info(&format!("{p}.self_attn.q_proj.weight"), BF16, &[32, 32]),
            info(&format!("{p}.mlp.gate_proj.weight"), BF16, &[96, 32]),
            info(&format!("{p}.mlp.down_proj.weight"), BF16, &[32, 96]),
        ];
        let got = names(&t);
        let attn: Vec<String> = ["q", "k", "v"]
            .iter()
            .map(|x| format!("{p}.self_attn.{x}_proj.weight"))
            .collect();
        let mlp: Vec<String> = ["gate", "up"]
            .iter()
            .map(|x| format!("{p}.mlp.{x}_proj.weight"))
            .collect();
        assert_eq!(got, vec![attn, mlp]);
    }

    #[test]
    fn incomplete_or_mismatched_groups_are_not_formed() {
        let qkv = |k_shape: &[usize], v_dtype: Dtype| {
            vec![
                info("a.q_proj.weight", BF16, &[32, 64]),
                info("a.k_proj.weight", BF16, k_shape),
                info("a.v_proj.weight", v_dtype, &[16, 64]),
            ]
        };
        assert_eq!(stack_groups(&qkv(&[16, 64], BF16)), vec![vec![0, 1, 2]]);
        assert!(stack_groups(&qkv(&[16, 32], BF16)).is_empty());
        assert!(stack_groups(&qkv(&[16, 64, 1], BF16)).is_empty());
        assert!(stack_groups(&qkv(&[1024], BF16)).is_empty());
        assert!(stack_groups(&qkv(&[16, 64], Dtype::F32)).is_empty());
        assert!(stack_groups(&qkv(&[16, 64], Dtype::F16)).is_empty());
        let mut missing = qkv(&[16, 64], BF16);
        missing.remove(2);
        assert!(stack_groups(&missing).is_empty());
        // Members of another prefix do not complete a group.
        missing.push(info("b.v_proj.weight", BF16, &[16, 64]));
        assert!(stack_groups(&missing).is_empty());
        // Names must end exactly so, after a dot.
        let odd = [
            info("xq_proj.weight", BF16, &[16, 64]),
            info("xk_proj.weight", BF16, &[16, 64]),
            info("xv_proj.weight", BF16, &[16, 64]),
            info("a.gate_proj.weight.bak", BF16, &[16, 64]),
            info("a.up_proj.weight.bak", BF16, &[16, 64]),
            info("a.gate_proj.bias", BF16, &[16, 64]),
            info("a.up_proj.bias", BF16, &[16, 64]),
        ];
        assert!(stack_groups(&odd).is_empty());
        // A bare `.q_proj.weight` (empty prefix) is still a Llama-style name.
        let bare = [
            info(".gate_proj.weight", BF16, &[16, 64]),
            info(".up_proj.weight", BF16, &[16, 64]),
        ];
        assert_eq!(stack_groups(&bare), vec![vec![0, 1]]);
    }
}
