//! Small element-wise and reduction steps of the forward pass, on plain `f32` rows.

use crate::model::numerics;

/// `out = x / sqrt(mean(x²) + eps) * w`, for each row of `x`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    for (row, out_row) in x.chunks_exact(w.len()).zip(out.chunks_exact_mut(w.len())) {
        // Sum of squares in f64, as ggml does.
        let mean_sq = row.iter().map(|&v| f64::from(v * v)).sum::<f64>() / w.len() as f64;
        let scale = 1.0 / (mean_sq as f32 + eps).sqrt();
        for ((o, v), wi) in out_row.iter_mut().zip(row).zip(w) {
            *o = v * scale * wi;
        }
    }
}

/// SwiGLU: `up[i] = silu(gate[i]) * up[i]`, with `silu(g) = g / (1 + e^-g)`.
pub fn silu_mul(gate: &[f32], up: &mut [f32]) {
    for (u, g) in up.iter_mut().zip(gate) {
        *u *= numerics::silu(*g);
    }
}

/// Residual add: `x += delta`.
pub fn add_assign(x: &mut [f32], delta: &[f32]) {
    for (a, b) in x.iter_mut().zip(delta) {
        *a += b;
    }
}

/// Adds `bias` to every row of `x` (`[rows, bias.len()]`).
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        add_assign(row, bias);
    }
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn norm(a: &[f32]) -> f32 {
    dot(a, a).sqrt()
}

/// `a·b / (‖a‖‖b‖)`, 0 when either is zero.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let denom = norm(a) * norm(b);
    if denom > 0.0 {
        dot(a, b) / denom
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_of_constant_row_is_weight() {
        let mut out = [0.0; 4];
        rms_norm(&[2.0, 2.0, 2.0, 2.0], &[1.0, 0.5, 2.0, 1.0], 0.0, &mut out);
        assert_eq!(out, [1.0, 0.5, 2.0, 1.0]);
    }

}
