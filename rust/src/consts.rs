//! Constants and scalar helpers shared by the kernels: one definition each.

/// `ln 2`.
pub const LN2: f64 = std::f64::consts::LN_2;
/// ln 2 split so that `k * LN2_HI` is exact for |k| < 2^11 (Cody–Waite); `LN2_HI + LN2_LO`
/// is ln 2 to about 2^-80.
pub const LN2_HI: f64 = 6.931_471_803_691_238e-1;
pub const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
/// Lanes of the manual unrolling in the summation loops; eight f64 fill one AVX-512 register.
pub const LANES: usize = 8;
/// Elements summed naively per lane before a block total enters a compensated sum; blocks of
/// this size also bound the stack buffers of the fused passes.
pub const BLOCK: usize = 512;

/// `log(1 + e^z)` without overflow (`+inf` for `z = +inf`).
pub fn softplus(z: f64) -> f64 {
    if z == f64::INFINITY {
        return z;
    }
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// `log(e^a + e^b)`, exact for `-inf` operands.
pub fn logaddexp(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln2_split_is_exact_where_promised() {
        assert_eq!(LN2_HI + LN2_LO, LN2);
        for k in [1.0, -7.0, 1023.0, -2047.0] {
            let product = k * LN2_HI;
            assert_eq!(product / k, LN2_HI, "k = {k}");
        }
    }

    #[test]
    fn softplus_and_logaddexp_edges() {
        assert_eq!(softplus(f64::INFINITY), f64::INFINITY);
        assert_eq!(softplus(f64::NEG_INFINITY), 0.0);
        assert!((softplus(0.0) - LN2).abs() < 1e-16);
        assert_eq!(logaddexp(f64::NEG_INFINITY, 3.0), 3.0);
        assert!((logaddexp(1e3, 1e3) - (1e3 + LN2)).abs() < 1e-12);
    }
}
