//! MLP activation backward. Forward `y = f(h)²` with `f = relu` or `leaky_relu(slope)`.
//!
//! Reference: `dh = dy · 2 f(h) f'(h)`, `f'(h) = 1` for `h >= 0`, else `0` / `slope`.

use crate::model::Activation;

/// Element-wise gradient.
pub fn activation_backward(h: &[f32], dy: &[f32], act: Activation) -> Vec<f32> {
    h.iter()
        .zip(dy)
        .map(|(&h, &g)| match act {
            Activation::Relu2 => {
                if h > 0.0 {
                    2.0 * h * g
                } else {
                    0.0
                }
            }
            Activation::LeakyRelu2 { slope } => {
                if h >= 0.0 {
                    2.0 * h * g
                } else {
                    2.0 * slope * slope * h * g
                }
            }
        })
        .collect()
}
