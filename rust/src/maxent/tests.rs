//! Tests of the max-ent solver on problems with known solutions.

use super::*;
use crate::Error;

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

fn problem<'a>(features: &'a [f64], cols: usize, targets: &'a [f64]) -> Problem<'a> {
    Problem {
        features,
        rows: features.len() / cols,
        cols,
        targets,
        log_weights: None,
        groups: None,
    }
}

/// Tight enough that the coefficients, not only the moments, are exact to ~1e-10.
const TIGHT: Options<'static> = Options {
    tolerance: 1e-13,
    max_iterations: DEFAULT_MAX_ITERATIONS,
    initial: None,
};

fn message(r: Result<Fit>) -> String {
    r.unwrap_err().to_string()
}

/// One boolean feature over an enumerated support {0..4} with a uniform proposal:
/// `p_lambda(x) ∝ a(x) e^{lambda phi(x)}` has mean `mu` exactly at
/// `lambda = logit(mu) - logit(base rate)`.
#[test]
fn boolean_feature_closed_form() {
    let a = [0.1f64, 0.2, 0.3, 0.15, 0.25];
    let phi = [1.0, 0.0, 1.0, 0.0, 0.0];
    let rate = 0.4;
    let lw: Vec<f64> = a.iter().map(|p| p.ln() - 0.2f64.ln()).collect();
    for mu in [0.01, 0.2, 0.4, 0.7, 0.999] {
        let targets = [mu];
        let p = Problem {
            log_weights: Some(&lw),
            ..problem(&phi, 1, &targets)
        };
        let fit = fit(&p, &TIGHT).unwrap();
        let want = logit(mu) - logit(rate);
        assert!(
            (fit.coefficients[0] - want).abs() < 1e-9,
            "mu={mu}: {fit:?} vs {want}"
        );
        assert!(fit.max_error < 1e-13 && (fit.moments[0] - mu).abs() < 1e-13);
        // The default tolerance bounds the moment error, not the coefficient's.
        let loose = super::fit(&p, &Options::default()).unwrap();
        assert!(loose.max_error < 1e-8 && (loose.moments[0] - mu).abs() < 1e-8);
        assert!(fit.iterations <= 20, "{fit:?}");
        // Z(lambda) = mean_x (a(x)/q(x)) e^{lambda phi(x)} = sum_x a(x) e^{lambda phi(x)}
        let z: f64 = a.iter().zip(&phi).map(|(a, f)| a * (want * f).exp()).sum();
        assert!((fit.log_z - z.ln()).abs() < 1e-9);
        // ESS of p_lambda's normalised weights over the five points.
        let w: Vec<f64> = a
            .iter()
            .zip(&phi)
            .map(|(a, f)| a * (want * f).exp() / z)
            .collect();
        let ess = 1.0 / w.iter().map(|v| v * v).sum::<f64>();
        assert!((fit.ess - ess).abs() < 1e-9 * ess);
    }
}

#[test]
fn zero_weight_samples_do_not_count_except_in_z() {
    // The last sample weighs zero; its feature value is outside the others' range.
    let phi = [1.0, 0.0, 0.0, 0.0, 50.0];
    let lw = [0.0, 0.0, 0.0, 0.0, f64::NEG_INFINITY];
    let targets = [0.5];
    let p = Problem {
        log_weights: Some(&lw),
        ..problem(&phi, 1, &targets)
    };
    let fit = fit(&p, &TIGHT).unwrap();
    assert!((fit.coefficients[0] - (logit(0.5) - logit(0.25))).abs() < 1e-9);
    // Z = (1/5) (e^lambda + 3) = (1/5) * 6 at lambda = ln 3.
    assert!((fit.log_z - (6.0f64 / 5.0).ln()).abs() < 1e-12);
}

#[test]
fn groups_are_normalised_separately() {
    // Context 0: base rate 0.1 (1 of 10); context 1: base rate 0.8 (4 of 5).
    let mut phi = vec![0.0; 15];
    phi[0] = 1.0;
    for v in &mut phi[10..14] {
        *v = 1.0;
    }
    let groups: Vec<i64> = (0..15).map(|i| i64::from(i >= 10)).collect();
    let targets = [0.5];
    let p = Problem {
        groups: Some(&groups),
        ..problem(&phi, 1, &targets)
    };
    let fit = fit(&p, &TIGHT).unwrap();
    let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
    let l = fit.coefficients[0];
    let average = 0.5 * (sigmoid(logit(0.1) + l) + sigmoid(logit(0.8) + l));
    assert!((average - 0.5).abs() < 1e-9, "{fit:?}");
    // Pooling the 15 samples (base rate 5/15) would give another coefficient.
    assert!((l - (logit(0.5) - logit(1.0 / 3.0))).abs() > 0.1);
    // Shuffled contexts give the same answer.
    let order: Vec<usize> = (0..15).map(|i| (i * 7) % 15).collect();
    let phi2: Vec<f64> = order.iter().map(|&i| phi[i]).collect();
    let groups2: Vec<i64> = order.iter().map(|&i| groups[i]).collect();
    let p2 = Problem {
        groups: Some(&groups2),
        ..problem(&phi2, 1, &targets)
    };
    let fit2 = super::fit(&p2, &TIGHT).unwrap();
    assert!((fit2.coefficients[0] - l).abs() < 1e-10);
}

#[test]
fn two_features_meet_their_targets() {
    // Rows (x1, x2) over a grid with a skewed base.
    let mut phi = Vec::new();
    let mut lw = Vec::new();
    for i in 0..6 {
        for j in 0..4 {
            phi.extend([f64::from(i), f64::from(j) * f64::from(j)]);
            lw.push(-0.1 * f64::from(i + j));
        }
    }
    let targets = [3.1, 4.0];
    let p = Problem {
        log_weights: Some(&lw),
        ..problem(&phi, 2, &targets)
    };
    let fit = fit(&p, &Options::default()).unwrap();
    assert!(fit.max_error < 1e-8 && fit.iterations < 20, "{fit:?}");
    // Warm start at the answer takes no step.
    let again = super::fit(
        &p,
        &Options {
            initial: Some(&fit.coefficients),
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(again.iterations, 0);
}

#[test]
fn refuses_bad_input() {
    let phi = [0.0, 1.0, 1.0, 0.0];
    let t = [0.5];
    let base = problem(&phi, 1, &t);
    let opts = Options::default();
    let with_weights = |lw: &[f64]| {
        message(fit(
            &Problem {
                log_weights: Some(lw),
                ..base
            },
            &opts,
        ))
    };
    let nan = [0.0, f64::NAN, 1.0, 0.0];
    assert!(message(fit(&problem(&nan, 1, &t), &opts)).contains("features[1, 0] is NaN"));
    let inf = [0.0, f64::INFINITY, 1.0, 0.0];
    assert!(message(fit(&problem(&inf, 1, &t), &opts)).contains("features[1, 0] is +inf"));
    let m = with_weights(&[0.0, f64::NAN, 0.0, 0.0]);
    assert!(m.contains("log_weights[1] is NaN"), "{m}");
    let m = with_weights(&[0.0, 0.0, f64::INFINITY, 0.0]);
    assert!(m.contains("log_weights[2] is +inf"), "{m}");
    let m = with_weights(&[0.0; 3]);
    assert!(
        m.contains("length mismatch") && m.contains("log_weights has 3"),
        "{m}"
    );
    let m = with_weights(&[f64::NEG_INFINITY; 4]);
    assert!(m.contains("every entry of log_weights is -inf"), "{m}");
    let m = message(fit(&problem(&[], 1, &t), &opts));
    assert!(m.contains("features is empty"), "{m}");
    let m = message(fit(&problem(&phi, 1, &[0.5, 0.5]), &opts));
    assert!(m.contains("target_moments has 2"), "{m}");
    let m = message(fit(&problem(&phi, 1, &[f64::NAN]), &opts));
    assert!(m.contains("target_moments[0] is NaN"), "{m}");
    let m = message(fit(
        &base,
        &Options {
            initial: Some(&[1.0, 2.0]),
            ..opts
        },
    ));
    assert!(m.contains("initial has 2"), "{m}");
    let m = message(fit(
        &base,
        &Options {
            tolerance: 0.0,
            ..opts
        },
    ));
    assert!(m.contains("tolerance"), "{m}");
}

#[test]
fn refuses_bad_groups() {
    let phi = [0.0, 1.0, 1.0, 0.0];
    let t = [0.5];
    let opts = Options::default();
    let with_groups = |g: &[i64]| {
        message(fit(
            &Problem {
                groups: Some(g),
                ..problem(&phi, 1, &t)
            },
            &opts,
        ))
    };
    let m = with_groups(&[0, -1, 0, 0]);
    assert!(m.contains("groups[1] is -1"), "{m}");
    let m = with_groups(&[0, 9, 0, 0]);
    assert!(m.contains("groups[1] is 9"), "{m}");
    let m = with_groups(&[0, 2, 0, 2]);
    assert!(m.contains("context 1 has no samples"), "{m}");
    let g = [0, 1, 0, 1];
    let lw = [0.0, f64::NEG_INFINITY, 0.0, f64::NEG_INFINITY];
    let p = Problem {
        groups: Some(&g),
        log_weights: Some(&lw),
        ..problem(&phi, 1, &t)
    };
    let m = message(fit(&p, &opts));
    assert!(
        m.contains("context 1 has no sample with nonzero weight"),
        "{m}"
    );
}

#[test]
fn refuses_unreachable_targets() {
    let phi = [0.0, 1.0, 1.0, 0.0, 0.5, 0.25];
    let opts = Options::default();
    let m = message(fit(&problem(&phi, 1, &[1.5]), &opts));
    assert!(
        m.contains("target_moments[0] = 1.5 is outside the range [0, 1]"),
        "{m}"
    );
    let m = message(fit(&problem(&phi, 1, &[-0.1]), &opts));
    assert!(m.contains("outside the range [0, 1]"), "{m}");
    let m = message(fit(&problem(&phi, 1, &[1.0]), &opts));
    assert!(m.contains("on the boundary of the range [0, 1]"), "{m}");
    // Only zero-weight samples have the feature: 0.7 is out of reach.
    let lw = [0.0, f64::NEG_INFINITY, f64::NEG_INFINITY, 0.0, 0.0, 0.0];
    let p = Problem {
        log_weights: Some(&lw),
        ..problem(&phi, 1, &[0.7])
    };
    let m = message(fit(&p, &opts));
    assert!(m.contains("outside the range [0, 0.5]"), "{m}");
}

#[test]
fn refuses_constant_and_collinear_features() {
    let opts = Options::default();
    // Column 1 is constant.
    let phi = [0.0, 2.0, 1.0, 2.0, 0.5, 2.0];
    let m = message(fit(&problem(&phi, 2, &[0.5, 2.0]), &opts));
    assert!(
        m.contains("feature 1 is constant") && m.contains("always 2"),
        "{m}"
    );
    // Column 2 = column 0 + 2 column 1 - 1.
    let rows = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.2]];
    let phi: Vec<f64> = rows
        .iter()
        .flat_map(|r| [r[0], r[1], r[0] + 2.0 * r[1] - 1.0])
        .collect();
    let m = message(fit(&problem(&phi, 3, &[0.5, 0.5, 0.5]), &opts));
    assert!(m.contains("features 0, 1 and 2 are collinear"), "{m}");
    // Duplicated column 0 in column 2, column 1 independent.
    let phi: Vec<f64> = rows.iter().flat_map(|r| [r[0], r[1], r[0]]).collect();
    let m = message(fit(&problem(&phi, 3, &[0.5, 0.5, 0.5]), &opts));
    assert!(m.contains("features 0 and 2 are collinear"), "{m}");
}

#[test]
fn refuses_jointly_unreachable_targets() {
    // Samples (1,0), (0,1), (0,0): each feature reaches [0, 1] but x1 + x2 <= 1 always.
    let phi = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0];
    let m = message(fit(&problem(&phi, 2, &[0.6, 0.6]), &Options::default()));
    assert!(m.contains("cannot be met together"), "{m}");
    // On the face x1 + x2 = 1: only infinite coefficients reach it.
    let m = message(fit(&problem(&phi, 2, &[0.3, 0.7]), &Options::default()));
    assert!(m.contains("lie on the boundary of the convex hull"), "{m}");
    // Barely outside the hull is caught too.
    let m = message(fit(
        &problem(&phi, 2, &[0.5, 0.500_001]),
        &Options::default(),
    ));
    assert!(m.contains("cannot be met together"), "{m}");
}

#[test]
fn no_convergence_carries_the_last_iterate() {
    let phi = [1.0, 0.0, 0.0, 0.0];
    let err = fit(
        &problem(&phi, 1, &[0.9]),
        &Options {
            max_iterations: 2,
            ..Options::default()
        },
    )
    .unwrap_err();
    match err {
        Error::NoConvergence {
            last,
            iterations,
            max_error,
            message,
        } => {
            assert_eq!(iterations, 2);
            assert!(last[0].is_finite() && last[0] > 0.0);
            assert!(max_error > 1e-8, "{message}");
            assert!(message.contains("did not converge within 2 iterations"));
        }
        other @ Error::InvalidInput(_) => panic!("{other:?}"),
    }
}

#[test]
fn extreme_but_attainable_targets() {
    // A boolean feature with rate 1/2 and a target of 1e-12: lambda ~ -27.6.
    let phi = [1.0, 0.0];
    let fit = fit(
        &problem(&phi, 1, &[1e-12]),
        &Options {
            tolerance: 1e-14,
            ..Options::default()
        },
    )
    .unwrap();
    assert!((fit.coefficients[0] - logit(1e-12)).abs() < 1e-3, "{fit:?}");
    assert!(fit.coefficients[0].is_finite());
}
