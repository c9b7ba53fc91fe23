//! Linear layers that read the same input — a block's Q, K and V
//! projections, its gate and up projections — kept as one matrix whose
//! rows are theirs one after another, so a step runs one product instead
//! of three (or two).
//!
//! Why: at decode the products are bandwidth-bound and short, so each
//! launch's fixed cost and each small matrix's poor use of the card count.
//! Stacked, a Llama-3-8B block's products are exactly the four shapes the
//! kernel sweep measures (6144 × 4096, 4096 × 4096, 28672 × 4096,
//! 4096 × 14336) instead of seven, two of them 1024 × 4096 (the k/v
//! projections ran at well below the large layers' speed-up, commit
//! 78c4816). The stacked product's output row holds each part's outputs
//! side by side; the kernels after it (RoPE, SwiGLU) take row strides.
//!
//! Stacking is lossless in both forms: BF16 rows are concatenated,
//! compressed matrices are joined tile stream by tile stream
//! ([`CompressedMatrix::stack_rows`]). Where compressed parts cannot be
//! joined (different exponent windows, ragged row tiles) the parts stay
//! separate products, and [`Stacked::is_stacked`] says so; the load summary
//! reports how many groups were stacked.

use cust::memory::DeviceSlice;
use half::bf16;

use crate::error::{Error, Result};
use crate::linear::{Gemm, Linear, LinearOut, LinearPath};

/// Where one part's outputs for `n` input rows lie in the output buffer:
/// element `(t, j)` at `offset + t * stride + j`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartLayout {
    pub offset: usize,
    pub stride: usize,
}

/// The layouts of parts with `rows[i]` output features each for `n` input
/// rows: side by side in each row when stacked, else one `n × rows[i]`
/// block after another.
pub fn part_layouts(rows: &[usize], n: usize, stacked: bool) -> Vec<PartLayout> {
    let total: usize = rows.iter().sum();
    let mut before = 0;
    rows.iter()
        .map(|&r| {
            let layout = if stacked {
                PartLayout {
                    offset: before,
                    stride: total,
                }
            } else {
                PartLayout {
                    offset: n * before,
                    stride: r,
                }
            };
            before += r;
            layout
        })
        .collect()
}

/// Products sharing an input: one stacked matrix, or one matrix per part.
pub struct Stacked {
    /// Output features of each part, in order.
    pub part_rows: Vec<usize>,
    /// One matrix (stacked) or one per part.
    pub linears: Vec<Linear>,
}

impl Stacked {
    /// The parts as one stacked matrix.
    pub fn one(part_rows: Vec<usize>, linear: Linear) -> Self {
        Self {
            part_rows,
            linears: vec![linear],
        }
    }

    /// The parts as separate matrices.
    pub fn separate(linears: Vec<Linear>) -> Self {
        Self {
            part_rows: linears.iter().map(|l| l.rows).collect(),
            linears,
        }
    }

    /// Whether the parts run as one product.
    pub fn is_stacked(&self) -> bool {
        self.linears.len() == 1 && self.part_rows.len() > 1
    }

    /// Output features of all parts together.
    pub fn rows(&self) -> usize {
        self.part_rows.iter().sum()
    }

    /// Where each part's outputs for `n` rows lie after [`Stacked::forward`].
    pub fn layouts(&self, n: usize) -> Vec<PartLayout> {
        part_layouts(&self.part_rows, n, self.is_stacked())
    }

    /// Enqueues every part's `Y = X · Wᵀ` for `n` rows of `x` into `out`
    /// (at least `n × rows()` elements), laid out as [`Stacked::layouts`]
    /// says; returns the path of the (first) product.
    pub fn forward(
        &self,
        gemm: &mut Gemm<'_>,
        x: &DeviceSlice<bf16>,
        n: usize,
        out: &mut DeviceSlice<bf16>,
    ) -> Result<LinearPath> {
        let need = n * self.rows();
        if out.len() < need {
            return Err(Error::Invalid(format!(
                "{}: the output holds {} elements, {n} rows need {need}",
                self.linears[0].name,
                out.len()
            )));
        }
        let mut path = None;
        let mut offset = 0;
        for linear in &self.linears {
            let len = n * linear.rows;
            let mut part = out.index(offset..offset + len);
            let p = linear.forward(gemm, x, n, LinearOut::Bf16(&mut part))?;
            path.get_or_insert(p);
            offset += len;
        }
        Ok(path.expect("at least one matrix"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacked_parts_sit_side_by_side_separate_ones_in_blocks() {
        // Q, K, V of a Llama-3-8B block, 3 rows.
        let rows = [4096, 1024, 1024];
        assert_eq!(
            part_layouts(&rows, 3, true),
            [
                PartLayout {
                    offset: 0,
                    stride: 6144
                },
                PartLayout {
                    offset: 4096,
                    stride: 6144
                },
                PartLayout {
                    offset: 5120,
                    stride: 6144
                },
            ]
        );
        assert_eq!(
            part_layouts(&rows, 3, false),
            [
                PartLayout {
                    offset: 0,
                    stride: 4096
                },
                PartLayout {
                    offset: 3 * 4096,
                    stride: 1024
                },
                PartLayout {
                    offset: 3 * 5120,
                    stride: 1024
                },
            ]
        );
        // Either way every element of an n × total buffer is some part's,
        // exactly once.
        for stacked in [true, false] {
            let (n, rows) = (5, [7, 3, 3]);
            let mut seen = vec![0; n * 13];
            for (layout, &r) in part_layouts(&rows, n, stacked).iter().zip(&rows) {
                for t in 0..n {
                    for j in 0..r {
                        seen[layout.offset + t * layout.stride + j] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "stacked {stacked}");
        }
    }
}
