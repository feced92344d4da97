//! Tests of the QRS kernels against brute-force evaluations of their definitions.

use super::*;

/// Brute-force O(N) evaluation of the definitions, in plain f64.
fn brute(l: &[f64], w: &[f64], b: f64) -> (f64, f64, f64, f64, f64) {
    let omega: Vec<f64> = w.iter().map(|v| v.exp()).collect();
    let r: Vec<f64> = l.iter().map(|v| v.exp()).collect();
    let wt: f64 = omega.iter().sum();
    let s: f64 = omega.iter().zip(&r).map(|(o, r)| o * r).sum();
    let beta = b.exp();
    let sb: f64 = omega.iter().zip(&r).map(|(o, r)| o * r.min(beta)).sum();
    let ar = sb / beta / wt;
    let (mut kl, mut tv, mut js) = (0.0, 0.0, 0.0);
    for i in 0..l.len() {
        let p = omega[i] * r[i] / s;
        let pb = omega[i] * r[i].min(beta) / sb;
        if p > 0.0 {
            kl += p * (p / pb).ln();
            js += 0.5 * p * (2.0 * p / (p + pb)).ln();
        }
        if pb > 0.0 {
            js += 0.5 * pb * (2.0 * pb / (p + pb)).ln();
        }
        tv += 0.5 * (p - pb).abs();
    }
    (ar, (sb / wt).ln(), kl, tv, js)
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

#[test]
fn matches_brute_force_with_ties_zeros_and_weights() {
    let l = [0.3, -1.0, f64::NEG_INFINITY, 2.0, 0.3, 2.0, -0.5, 1.1];
    let w = [0.0, -0.2, 0.1, -1.0, 0.5, 0.0, f64::NEG_INFINITY, 0.3];
    let idx = QrsIndex::new(&l, Some(&w)).unwrap();
    let (lk, wk): (Vec<f64>, Vec<f64>) = l
        .iter()
        .zip(&w)
        .filter(|(_, w)| **w > f64::NEG_INFINITY)
        .map(|(a, b)| (*a, *b))
        .unzip();
    for b in [-3.0, -1.0, -0.2, 0.3, 0.31, 1.1, 1.5, 2.0, 2.5] {
        let p = idx.point(b, true);
        let (ar, lzb, kl, tv, js) = brute(&lk, &wk, b);
        assert!(
            close(p.acceptance_rate, ar, 1e-13),
            "ar at {b}: {} vs {ar}",
            p.acceptance_rate
        );
        assert!(close(p.log_z_beta, lzb, 1e-13), "log_z_beta at {b}");
        assert!(close(p.kl, kl, 1e-13), "kl at {b}: {} vs {kl}", p.kl);
        assert!(close(p.tv, tv, 1e-13), "tv at {b}: {} vs {tv}", p.tv);
        assert!(close(p.js, js, 1e-13), "js at {b}: {} vs {js}", p.js);
    }
}

#[test]
fn exact_limits() {
    let l = [0.0, 1.0, -2.0, 0.5];
    let idx = QrsIndex::new(&l, None).unwrap();
    let top = idx.point(1.0, true);
    assert_eq!((top.kl, top.tv, top.js), (0.0, 0.0, 0.0));
    assert_eq!(idx.point(-2.0, false).acceptance_rate, 1.0);
    assert_eq!(idx.point(-50.0, false).acceptance_rate, 1.0);
    let with_zero = QrsIndex::new(&[0.0, f64::NEG_INFINITY], None).unwrap();
    assert_eq!(with_zero.point(-5.0, false).acceptance_rate, 0.5);
    assert_eq!(with_zero.max_acceptance_rate(), 0.5);
}

#[test]
fn huge_ratio_ranges_keep_relative_precision() {
    // Ratios e^{-800} and e^{0}: at β = e^{-800} half the weight is accepted with certainty
    // and the other half with probability 1, so AR = 1.
    let idx = QrsIndex::new(&[-800.0, 0.0], None).unwrap();
    assert!((idx.point(-800.0, false).acceptance_rate - 1.0).abs() < 1e-15);
    let ar = idx.point(-799.0, false).acceptance_rate;
    assert!((ar - 0.5 * (1.0 + (-1.0f64).exp())).abs() < 1e-14, "{ar}");
    let idx = QrsIndex::new(&[900.0, 1000.0, 1000.0], None).unwrap();
    assert!(
        (idx.log_z() - (1000.0 + (2.0 / 3.0f64).ln() + (1.0 + 0.5 * (-100.0f64).exp()).ln())).abs()
            < 1e-12
    );
}

#[test]
fn beta_for_rate_round_trips() {
    let l = [0.3, -1.0, 2.0, 0.3, 2.0, -0.5, 1.1, f64::NEG_INFINITY];
    let idx = QrsIndex::new(&l, None).unwrap();
    for rate in [0.875, 0.8, 0.6, 0.5, 0.3, 0.1, 1e-3] {
        let b = idx.log_beta_for_acceptance_rate(rate).unwrap();
        let got = idx.point(b, false).acceptance_rate;
        assert!(
            (got - rate).abs() < 1e-13 * rate.max(1e-300) + 1e-15,
            "{rate}: {got}"
        );
    }
    assert!((idx.log_beta_for_acceptance_rate(0.875).unwrap() + 1.0).abs() < 1e-14);
    assert!(idx.log_beta_for_acceptance_rate(0.9).is_err());
    assert!(idx.log_beta_for_acceptance_rate(0.0).is_err());
}

#[test]
fn moments_match_brute_force() {
    let l = [0.3, -1.0, f64::NEG_INFINITY, 2.0, 0.3];
    let f = [1.0, 2.0, -1.0, 0.5, 3.0, 0.0, 4.0, 1.0, -2.0, 2.5];
    let idx = QrsIndex::new(&l, None).unwrap();
    let betas = [-2.0, 0.3, 1.0, 2.0, 5.0];
    let m = idx.feature_moments(&l, None, &f, 2, &betas).unwrap();
    for (q, &b) in betas.iter().enumerate() {
        let beta = b.exp();
        let wts: Vec<f64> = l.iter().map(|v| v.exp().min(beta)).collect();
        let z: f64 = wts.iter().sum();
        for j in 0..2 {
            let want: f64 = wts
                .iter()
                .enumerate()
                .map(|(i, w)| w * f[i * 2 + j])
                .sum::<f64>()
                / z;
            assert!(
                close(m[q * 2 + j], want, 1e-14),
                "beta {b} feature {j}: {} vs {want}",
                m[q * 2 + j]
            );
        }
    }
}

#[test]
fn accept_rule_and_errors() {
    let l = [0.0, -1.0, f64::NEG_INFINITY, 3.0];
    let u = [0.99, 0.5, 0.0, 0.999];
    assert_eq!(
        accept(&l, &u, 0.0, Uniforms::Plain).unwrap(),
        vec![true, false, false, true]
    );
    let lu: Vec<f64> = u.iter().map(|v| v.ln()).collect();
    assert_eq!(
        accept(&l, &lu, 0.0, Uniforms::Log).unwrap(),
        vec![true, false, false, true]
    );
    assert!(accept(&l, &[0.5, 0.5, 1.0, 0.5], 0.0, Uniforms::Plain)
        .unwrap_err()
        .to_string()
        .contains("uniforms[2]"));
    assert!(accept(&[f64::NAN], &[0.5], 0.0, Uniforms::Plain)
        .unwrap_err()
        .to_string()
        .contains("log_ratios[0] is NaN"));
    assert!(accept(&[0.0], &[0.5], f64::NAN, Uniforms::Plain).is_err());
    assert!(accept(&[0.0], &[0.5, 0.1], 0.0, Uniforms::Plain).is_err());
}

#[test]
fn imh_moves_by_ratio() {
    let run = imh_chain(
        &[0.0, -1.0, 1.0, f64::NEG_INFINITY],
        &[0.9, 0.5, 0.99, 0.0],
        Uniforms::Plain,
        f64::NEG_INFINITY,
    )
    .unwrap();
    // Step 0 leaves the -inf start; step 1 proposes ratio e^-1 ≈ 0.37 < 0.5: stay; step 2 moves up.
    assert_eq!(run.states, vec![0, 0, 2, 2]);
    assert_eq!(run.accepted, vec![true, false, true, false]);
    assert_eq!(run.final_log_ratio, 1.0);
}
