//! Run-time CPU dispatch: a kernel body compiled for baseline x86-64, AVX2+FMA and AVX-512, the
//! widest one the running CPU supports picked on each call (the feature tests are cached by
//! std). Every x86-64 path sits under `cfg(target_arch = "x86_64")`: on other architectures
//! (aarch64 Linux, macOS) only the portable body is compiled.

/// Compiles a kernel body three times (baseline, AVX2+FMA, AVX-512) and calls the widest one
/// the running CPU supports. The identifier in brackets names the [`crate::vexp::MulAdd`] the
/// body uses: [`crate::vexp::Fused`] in the FMA copies, [`crate::vexp::Unfused`] in the
/// baseline one.
macro_rules! dispatched {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty => [$m:ident] $body:expr) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) -> $ret {
            fn base($($arg: $ty),*) -> $ret {
                #[allow(dead_code)]
                type $m = $crate::vexp::Unfused;
                $body
            }
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
                unsafe fn wide($($arg: $ty),*) -> $ret {
                    #[allow(dead_code)]
                    type $m = $crate::vexp::Fused;
                    $body
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn mid($($arg: $ty),*) -> $ret {
                    #[allow(dead_code)]
                    type $m = $crate::vexp::Fused;
                    $body
                }
                let level = $crate::dispatch::forced_level();
                if level == 0
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                {
                    // SAFETY: the CPU was just checked to support every enabled feature.
                    return unsafe { wide($($arg),*) };
                }
                if level != 1
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above.
                    return unsafe { mid($($arg),*) };
                }
            }
            base($($arg),*)
        }
    };
}
pub(crate) use dispatched;

/// Compiles a branch-free decision loop `$body(l, u, log_beta, out) -> bool` for baseline
/// x86-64, AVX2+FMA and AVX-512 (with the byte and mask extensions its `bool` output needs)
/// as `fn $name`, dispatched like [`dispatched`].
macro_rules! with_avx2 {
    ($name:ident, $body:ident) => {
        fn $name(l: &[f64], u: &[f64], log_beta: f64, out: &mut [bool]) -> bool {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")]
                unsafe fn widest(l: &[f64], u: &[f64], log_beta: f64, out: &mut [bool]) -> bool {
                    $body(l, u, log_beta, out)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn wide(l: &[f64], u: &[f64], log_beta: f64, out: &mut [bool]) -> bool {
                    $body(l, u, log_beta, out)
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the CPU was just checked to support every enabled feature.
                    return unsafe { widest(l, u, log_beta, out) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above.
                    return unsafe { wide(l, u, log_beta, out) };
                }
            }
            $body(l, u, log_beta, out)
        }
    };
}
pub(crate) use with_avx2;

/// Which copy [`dispatched`] kernels may use on this thread: 0 = the widest the CPU has,
/// 2 = at most AVX2+FMA, 1 = baseline. Always 0 outside unit tests, which lower it to check
/// every copy on a machine that has AVX-512 (see [`with_level`]). Only the x86-64 dispatch
/// reads it: elsewhere the portable copy is the only one.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn forced_level() -> u8 {
    #[cfg(test)]
    {
        FORCED_LEVEL.with(std::cell::Cell::get)
    }
    #[cfg(not(test))]
    {
        0
    }
}

#[cfg(test)]
thread_local! {
    static FORCED_LEVEL: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

/// Runs `f` once with each kernel copy this CPU can run (baseline, AVX2+FMA, widest), on
/// this thread; parallel chunks on rayon's threads keep the widest copy.
#[cfg(test)]
pub(crate) fn with_level(f: impl Fn()) {
    for level in [1, 2, 0] {
        FORCED_LEVEL.with(|c| c.set(level));
        f();
    }
    FORCED_LEVEL.with(|c| c.set(0));
}
