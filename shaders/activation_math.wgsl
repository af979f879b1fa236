// The activation functions and their derivatives, shared by ActivationProgram (activation.wgsl) and
// ActivationGradProgram (activation_grad.wgsl), which append their entry point to this file. KIND is
// baked in, so each pipeline holds one function and no run-time switch.
//
// Every exp() here takes a non-positive argument, so nothing overflows to infinity (WGSL leaves f32
// overflow undefined) and large |x| give exact limits (0, x, ±1), never NaN. The functions' argument x
// shadows the programs' input buffer x, which only the entry points read.

const KIND : i32 = {{KIND}};
const GELU_TANH : i32 = 0;
const GELU_ERF : i32 = 1;
const SILU : i32 = 2;

const SQRT_2_OVER_PI : f32 = 0.7978845608028654;
const GELU_TANH_CUBIC : f32 = 0.044715;
const SQRT1_2 : f32 = 0.7071067811865476;
const INV_SQRT_2PI : f32 = 0.3989422804014327;
// Beyond this |x| the tanh GELU's inner tanh is ±1 in float32 (tanh(43) = 1 - 1e-37), so x is clamped
// there before the cubic, which keeps x³ finite for any input.
const GELU_TANH_CLAMP : f32 = 10.0;

// tanh(u) = sign(u)·(1 − e)/(1 + e) with e = exp(−2|u|) in (0, 1].
fn tanhStable(u : f32) -> f32 {
  let e = exp(-2.0 * abs(u));
  let t = (1.0 - e) / (1.0 + e);
  return select(t, -t, u < 0.0);
}

// erfc(z) for z ≥ 0 by Abramowitz & Stegun 7.1.26 (|error of erf| ≤ 1.5e-7):
// erfc(z) = (a1·s + a2·s² + a3·s³ + a4·s⁴ + a5·s⁵)·exp(−z²), s = 1/(1 + p·z).
fn erfcNonNegative(z : f32) -> f32 {
  let s = 1.0 / (1.0 + 0.3275911 * z);
  let poly = s * (0.254829592 + s * (-0.284496736 + s * (1.421413741 + s * (-1.453152027 + s * 1.061405429))));
  return poly * exp(-z * z);
}

// The standard normal CDF Φ(x) = (1 + erf(x/√2))/2, from erfc of |x|/√2 on either side so that the
// lower tail is not 1 − (nearly 1).
fn normalCdf(x : f32) -> f32 {
  let halfTail = 0.5 * erfcNonNegative(abs(x) * SQRT1_2);
  return select(1.0 - halfTail, halfTail, x < 0.0);
}

// σ(x) from e = exp(−|x|) in (0, 1].
fn sigmoidStable(x : f32) -> f32 {
  let e = exp(-abs(x));
  let r = 1.0 / (1.0 + e);
  return select(r, e * r, x < 0.0);
}

// tanh(√(2/π)·(x + 0.044715·x³)) of the tanh GELU.
fn geluTanhInner(x : f32) -> f32 {
  let c = clamp(x, -GELU_TANH_CLAMP, GELU_TANH_CLAMP);
  return tanhStable(SQRT_2_OVER_PI * (c + GELU_TANH_CUBIC * c * c * c));
}

fn activate(x : f32) -> f32 {
  if (KIND == GELU_TANH) {
    return 0.5 * x * (1.0 + geluTanhInner(x));
  } else if (KIND == GELU_ERF) {
    return x * normalCdf(x);
  }
  return x * sigmoidStable(x);
}

// f'(x), recomputed from x.
fn activateGrad(x : f32) -> f32 {
  if (KIND == GELU_TANH) {
    // ½(1 + t) + ½x(1 − t²)·√(2/π)(1 + 3·0.044715·x²); the second term is 0 where x is clamped.
    let t = geluTanhInner(x);
    let c = clamp(x, -GELU_TANH_CLAMP, GELU_TANH_CLAMP);
    let innerSlope = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_TANH_CUBIC * c * c);
    return 0.5 * (1.0 + t) + 0.5 * c * (1.0 - t * t) * innerSlope;
  } else if (KIND == GELU_ERF) {
    // Φ(x) + x·φ(x), with the exact normal pdf φ(x) = exp(−x²/2)/√(2π).
    return normalCdf(x) + x * INV_SQRT_2PI * exp(-0.5 * x * x);
  }
  // σ(x)·(1 + x·(1 − σ(x))).
  let s = sigmoidStable(x);
  return s * (1.0 + x * (1.0 - s));
}
