//! The one error type of the numerical core. The binding layer maps it to Python exceptions
//! (`InvalidInput` -> `ValueError`, `NoConvergence` -> `disco.ConvergenceError`).

/// Everything a kernel can refuse or fail at.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The caller passed something the kernel cannot give a correct answer for.
    #[error("{0}")]
    InvalidInput(String),
    /// An iterative solver stopped without meeting its tolerance; `last` is its final iterate.
    #[error("{message}")]
    NoConvergence {
        message: String,
        last: Vec<f64>,
        iterations: usize,
        max_error: f64,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Shorthand for an `InvalidInput` error.
pub(crate) fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidInput(message.into())
}

/// Checks that every value is a legal log-score: finite or `-inf` (probability zero).
/// NaN and `+inf` are refused with the argument name and the first offending position.
pub fn check_log_scores(arg: &str, values: &[f64]) -> Result<()> {
    // `!(v < INF)` is true exactly for NaN and +inf.
    if let Some((i, v)) = values
        .iter()
        .enumerate()
        .find(|(_, v)| !(**v < f64::INFINITY))
    {
        return Err(invalid(format!(
            "{arg}[{i}] is {}: log-scores must be finite or -inf",
            describe(*v)
        )));
    }
    Ok(())
}

/// Checks that every value is finite (features, moments, coefficients).
pub fn check_finite(arg: &str, values: &[f64]) -> Result<()> {
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(invalid(format!(
            "{arg}[{i}] is {}: values must be finite",
            describe(*v)
        )));
    }
    Ok(())
}

/// Checks that a row-major matrix of `rows` x `cols` values has a finite entry everywhere.
pub fn check_finite_matrix(arg: &str, values: &[f64], cols: usize) -> Result<()> {
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        let (r, c) = (
            i.checked_div(cols).unwrap_or(i),
            i.checked_rem(cols).unwrap_or(0),
        );
        return Err(invalid(format!(
            "{arg}[{r}, {c}] is {}: values must be finite",
            describe(*v)
        )));
    }
    Ok(())
}

/// Checks that several per-sample arrays have the same length as the first.
pub fn check_same_length(arrays: &[(&str, usize)]) -> Result<()> {
    if let Some(((first, n), rest)) = arrays.split_first() {
        for (name, m) in rest {
            if m != n {
                return Err(invalid(format!(
                    "length mismatch: {first} has {n} values but {name} has {m}"
                )));
            }
        }
    }
    Ok(())
}

/// Checks that an array is not empty.
pub fn check_non_empty(arg: &str, len: usize) -> Result<()> {
    if len == 0 {
        return Err(invalid(format!(
            "{arg} is empty: at least one sample is needed"
        )));
    }
    Ok(())
}

fn describe(v: f64) -> &'static str {
    if v.is_nan() {
        "NaN"
    } else if v > 0.0 {
        "+inf"
    } else {
        "-inf"
    }
}
