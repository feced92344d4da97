//! Tests of the divergence kernels against textbook formulas and exact values on whole supports.

use super::*;
use crate::vexp;

/// Whole support {0, 1, 2} with a uniform proposal: importance sampling is exact.
fn exact_case() -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let p = [0.5f64, 0.3, 0.2];
    let pi = [0.2f64, 0.3, 0.5];
    let target: Vec<f64> = p.iter().map(|v| (v * 7.0).ln()).collect(); // Z = 7
    let model: Vec<f64> = pi.iter().map(|v| v.ln()).collect();
    let proposal = vec![(1.0f64 / 3.0).ln(); 3];
    (target, model, proposal)
}

#[test]
fn exact_on_whole_support() {
    let (t, m, q) = exact_case();
    let s = LogScores::new(&t, &m, &q);
    let p = [0.5f64, 0.3, 0.2];
    let pi = [0.2f64, 0.3, 0.5];
    let kl: f64 = p.iter().zip(&pi).map(|(a, b)| a * (a / b).ln()).sum();
    let rkl: f64 = p.iter().zip(&pi).map(|(a, b)| b * (b / a).ln()).sum();
    let tv: f64 = 0.5 * p.iter().zip(&pi).map(|(a, b)| (a - b).abs()).sum::<f64>();
    let js: f64 = p
        .iter()
        .zip(&pi)
        .map(|(a, b)| {
            let mid = 0.5 * (a + b);
            0.5 * a * (a / mid).ln() + 0.5 * b * (b / mid).ln()
        })
        .sum();
    for (kind, want) in [
        (Divergence::ForwardKl, kl),
        (Divergence::ReverseKl, rkl),
        (Divergence::TotalVariation, tv),
        (Divergence::JensenShannon, js),
    ] {
        let got = estimate(kind, &s, None).unwrap();
        assert!((got - want).abs() < 1e-14, "{kind:?}: {got} vs {want}");
        let given = estimate(kind, &s, Some(7f64.ln())).unwrap();
        assert!(
            (given - want).abs() < 1e-14,
            "{kind:?} with Z: {given} vs {want}"
        );
    }
}

#[test]
fn zero_probabilities_are_exact() {
    let t = [0.0, f64::NEG_INFINITY];
    let m = [f64::NEG_INFINITY, 0.0];
    let q = [0.5f64.ln(), 0.5f64.ln()];
    let s = LogScores::new(&t, &m, &q);
    assert_eq!(
        estimate(Divergence::ForwardKl, &s, None).unwrap(),
        f64::INFINITY
    );
    assert_eq!(
        estimate(Divergence::ReverseKl, &s, None).unwrap(),
        f64::INFINITY
    );
    assert!((estimate(Divergence::TotalVariation, &s, None).unwrap() - 1.0).abs() < 1e-15);
    let js = estimate(Divergence::JensenShannon, &s, None).unwrap();
    assert!((js - std::f64::consts::LN_2).abs() < 1e-15);
}

#[test]
fn grouped_rows_are_independent() {
    let (t, m, q) = exact_case();
    let tt = [t.clone(), t].concat();
    let mm = [m.clone(), m].concat();
    let qq = [q.clone(), q].concat();
    let g = GroupedSamples {
        target: &tt,
        model: &mm,
        proposal: &qq,
        n: 3,
    };
    let out = estimate_grouped(Divergence::ForwardKl, &g, None).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0], out[1]);
}

/// The textbook formulas with libm, sample by sample (docs/design.md §5.1).
fn naive(kind: Divergence, t: &[f64], m: &[f64], q: &[f64], log_z: Option<f64>) -> f64 {
    let n = t.len() as f64;
    let z = log_z.unwrap_or_else(|| {
        let s: f64 = t.iter().zip(q).map(|(a, b)| (a - b).exp()).sum();
        (s / n).ln()
    });
    let terms = t.iter().zip(m).zip(q).map(|((&ti, &mi), &qi)| {
        let p = if ti > f64::NEG_INFINITY {
            (ti - qi - z).exp()
        } else {
            0.0
        };
        let pi = if mi > f64::NEG_INFINITY {
            (mi - qi).exp()
        } else {
            0.0
        };
        let mid = 0.5 * (p + pi);
        let xlog = |a: f64, b: f64| if a > 0.0 { a * (a / b).ln() } else { 0.0 };
        match kind {
            Divergence::ForwardKl => xlog(p, pi),
            Divergence::ReverseKl => xlog(pi, p),
            Divergence::TotalVariation => 0.5 * (p - pi).abs(),
            Divergence::JensenShannon => 0.5 * (xlog(p, mid) + xlog(pi, mid)),
            Divergence::PearsonChi2 | Divergence::NeymanChi2 => f64::NAN,
        }
    });
    terms.sum::<f64>() / n
}

#[test]
fn fused_passes_match_the_textbook_formulas() {
    crate::dispatch::with_level(fused_passes_match_here);
}

fn fused_passes_match_here() {
    let kinds = [
        Divergence::ForwardKl,
        Divergence::ReverseKl,
        Divergence::TotalVariation,
        Divergence::JensenShannon,
    ];
    for n in [
        1,
        7,
        8,
        9,
        100,
        513,
        5_000,
        vexp::PARALLEL_THRESHOLD + 17,
        200_003,
    ] {
        let mut state = 0x2545_f491_4f6c_dd1d_u64 ^ n as u64;
        let mut unif = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let q: Vec<f64> = (0..n).map(|_| -30.0 + 6.0 * unif()).collect();
        let m: Vec<f64> = q.iter().map(|v| v + unif() - 0.5).collect();
        let full: Vec<f64> = q.iter().map(|v| v + 5.0 + 2.0 * unif() - 1.0).collect();
        let mut t = full.clone();
        if n > 3 {
            t[n / 3] = f64::NEG_INFINITY; // a sample the target rules out
        }
        for target in [&full, &t] {
            let s = LogScores::new(target, &m, &q);
            for kind in kinds {
                for log_z in [None, Some(5.25)] {
                    let got = estimate(kind, &s, log_z).unwrap();
                    let want = naive(kind, target, &m, &q, log_z);
                    assert!(
                        got == want || (got - want).abs() <= 1e-10 * want.abs().max(1e-3),
                        "{kind:?} n={n} log_z={log_z:?}: {got} vs {want}"
                    );
                }
            }
        }
        // Model zero where the target is not: forward KL infinite, the others finite.
        let mut m0 = m.clone();
        m0[n - 1] = f64::NEG_INFINITY;
        let s0 = LogScores::new(&t, &m0, &q);
        assert_eq!(
            estimate(Divergence::ForwardKl, &s0, None).unwrap(),
            f64::INFINITY
        );
        for kind in [Divergence::TotalVariation, Divergence::JensenShannon] {
            let got = estimate(kind, &s0, Some(5.0)).unwrap();
            let want = naive(kind, &t, &m0, &q, Some(5.0));
            assert!(
                (got - want).abs() <= 1e-10 * want.abs().max(1e-3),
                "{kind:?} n={n}"
            );
        }
    }
}

#[test]
fn the_first_problem_is_the_one_reported() {
    let nan = f64::NAN;
    let ninf = f64::NEG_INFINITY;
    let err = |t: &[f64], m: &[f64], q: &[f64], z: Option<f64>| {
        let s = LogScores::new(t, m, q);
        estimate(Divergence::TotalVariation, &s, z)
            .unwrap_err()
            .to_string()
    };
    // NaN in the model beats a zero-probability proposal under the target.
    assert!(err(&[0.0, 0.0], &[0.0, nan], &[ninf, 0.0], None).contains("model_log_probs[1] is NaN"));
    // The target's zero proposal beats a bad log_z, which beats the model's zero proposal.
    assert!(
        err(&[0.0, 0.0], &[0.0, 0.0], &[0.0, ninf], Some(nan)).contains("proposal_log_probs[1]")
    );
    assert!(err(&[0.0, ninf], &[0.0, 0.0], &[0.0, ninf], Some(nan)).contains("log_z is NaN"));
    assert!(err(&[ninf, ninf], &[0.0, 0.0], &[0.0, ninf], None).contains("zero weight"));
    assert!(
        err(&[0.0, ninf], &[0.0, 0.0], &[0.0, ninf], Some(1.0)).contains("proposal_log_probs[1]")
    );
    // Both zero under a zero-probability proposal is legal and weighs nothing.
    let both_zero = [0.0, ninf];
    let s = LogScores::new(&both_zero, &both_zero, &both_zero);
    assert!(
        estimate(Divergence::JensenShannon, &s, Some(0.0))
            .unwrap()
            .abs()
            < 1e-15
    );
    assert!(
        estimate(Divergence::ForwardKl, &s, Some(0.0))
            .unwrap()
            .abs()
            < 1e-15
    );
}

#[test]
fn refuses_bad_input() {
    let s = LogScores::new(&[0.0], &[0.0, 1.0], &[0.0]);
    assert!(estimate(Divergence::ForwardKl, &s, None)
        .unwrap_err()
        .to_string()
        .contains("mismatch"));
    let s = LogScores::new(&[f64::NEG_INFINITY], &[0.0], &[0.0]);
    assert!(estimate(Divergence::ForwardKl, &s, None).is_err());
    let s = LogScores::new(&[0.0], &[0.0], &[f64::NEG_INFINITY]);
    assert!(estimate(Divergence::ForwardKl, &s, None)
        .unwrap_err()
        .to_string()
        .contains("proposal_log_probs[0]"));
}

// f-DPG generators, rewards and estimates.

const ALL: [Divergence; 6] = [
    Divergence::ForwardKl,
    Divergence::ReverseKl,
    Divergence::TotalVariation,
    Divergence::JensenShannon,
    Divergence::PearsonChi2,
    Divergence::NeymanChi2,
];

#[test]
fn f_prime_matches_finite_differences_of_f() {
    for kind in ALL {
        for &t in &[0.05f64, 0.4, 0.9, 1.7, 6.0] {
            if kind == Divergence::TotalVariation {
                continue; // not differentiable at 1, piecewise constant slope elsewhere
            }
            let h = 1e-6 * t;
            let numeric = (kind.f((t + h).ln()) - kind.f((t - h).ln())) / (2.0 * h);
            let analytic = kind.f_prime(t.ln());
            assert!(
                (numeric - analytic).abs() < 1e-6 * (1.0 + analytic.abs()),
                "{kind:?} at {t}"
            );
        }
        assert!(kind.f(0.0).abs() < 1e-15, "{kind:?}: f(1) must be 0");
    }
}

#[test]
fn exact_on_a_whole_support() {
    let p = [0.5f64, 0.3, 0.2, 0.0];
    let pi = [0.25f64, 0.25, 0.4, 0.1];
    let q = [0.25f64; 4];
    let lp: Vec<f64> = p.iter().map(|v| (v * 3.0).ln()).collect(); // Z = 3
    let lpi: Vec<f64> = pi.iter().map(|v| v.ln()).collect();
    let lq: Vec<f64> = q.iter().map(|v| v.ln()).collect();
    let batch = LogScores::of_policy(&lpi, &lp, &lq);
    let tv = 0.5 * p.iter().zip(&pi).map(|(a, b)| (a - b).abs()).sum::<f64>();
    let (got, _) = estimate_with_stderr(Divergence::TotalVariation, &batch, 3f64.ln()).unwrap();
    assert!((got - tv).abs() < 1e-14, "{got} vs {tv}");
    let js: f64 = p
        .iter()
        .zip(&pi)
        .map(|(a, b)| {
            let m = 0.5 * (a + b);
            let l = if *a > 0.0 { a * (a / m).ln() } else { 0.0 };
            0.5 * l + 0.5 * b * (b / m).ln()
        })
        .sum();
    let (got, _) = estimate_with_stderr(Divergence::JensenShannon, &batch, 3f64.ln()).unwrap();
    assert!((got - js).abs() < 1e-14, "{got} vs {js}");
    let neyman: f64 = p.iter().zip(&pi).map(|(a, b)| (a - b).powi(2) / b).sum();
    let (got, _) = estimate_with_stderr(Divergence::NeymanChi2, &batch, 3f64.ln()).unwrap();
    assert!((got - neyman).abs() < 1e-13, "{got} vs {neyman}");
    let (rkl, _) = estimate_with_stderr(Divergence::ReverseKl, &batch, 3f64.ln()).unwrap();
    assert_eq!(rkl, f64::INFINITY);
}

#[test]
fn rewards_are_finite_where_the_target_is_zero() {
    let batch = LogScores::of_policy(
        &[-1.0, f64::NEG_INFINITY],
        &[f64::NEG_INFINITY, 0.0],
        &[-1.0, -1.0],
    );
    for kind in ALL {
        let (mut w, mut wr) = ([0.0; 2], [0.0; 2]);
        pseudo_rewards(kind, &batch, 0.0, 30.0, &mut w, &mut wr).unwrap();
        assert!(w[0] == 1.0 && wr[0].is_finite(), "{kind:?}");
        assert!(w[1] == 0.0 && wr[1] == 0.0, "{kind:?}");
    }
}
