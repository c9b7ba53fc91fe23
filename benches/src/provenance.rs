//! Where a benchmark ran: driver version, commit, date.

use zipserv_gpu::DeviceInfo;

/// Environment variable that overrides the commit embedded at build time
/// (e.g. when the binary was built from a tree without git metadata).
pub const COMMIT_ENV: &str = "ZIPSERV_COMMIT";

/// Where the Linux NVIDIA kernel module reports its version.
const NVIDIA_PROC_VERSION: &str = "/proc/driver/nvidia/version";

/// The short commit hash the binary was built from, or `"unknown"`.
pub fn build_commit() -> &'static str {
    zipserv_gpu::BUILD_COMMIT
}

/// `$ZIPSERV_COMMIT` when set and non-empty, else [`build_commit`].
pub fn commit() -> String {
    match std::env::var(COMMIT_ENV) {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => build_commit().to_string(),
    }
}

/// The driver's version, e.g. `"580.159.04"`, read from the kernel module;
/// where that is unavailable, the CUDA version the driver API reports,
/// e.g. `"CUDA 13.0 driver API"`.
pub fn driver_version(info: &DeviceInfo) -> String {
    std::fs::read_to_string(NVIDIA_PROC_VERSION)
        .ok()
        .and_then(|text| parse_nvidia_driver_version(&text))
        .unwrap_or_else(|| {
            let (major, minor) = info.cuda_driver_version;
            format!("CUDA {major}.{minor} driver API")
        })
}

/// The version number on the `NVRM version:` line of the kernel module's
/// report (the first dotted all-digit word on it).
pub fn parse_nvidia_driver_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("NVRM version:"))?;
    line.split_whitespace()
        .find(|word| {
            word.contains('.')
                && word.starts_with(|c: char| c.is_ascii_digit())
                && word.chars().all(|c| c.is_ascii_digit() || c == '.')
        })
        .map(str::to_string)
}

/// Today's date in UTC as `YYYY-MM-DD`.
pub fn today_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_date((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Gregorian (year, month, day) of a count of days since 1970-01-01.
///
/// Counts in 400-year eras (146 097 days each) of years that start on
/// March 1st, so that the leap day is the last day of a year and month
/// lengths follow a fixed 153-days-per-5-months pattern.
fn civil_date(days_since_epoch: i64) -> (i64, u32, u32) {
    const DAYS_PER_ERA: i64 = 146_097;
    // 1970-01-01 is day 719 468 counted from 0000-03-01.
    let days = days_since_epoch + 719_468;
    let era = days.div_euclid(DAYS_PER_ERA);
    let day_of_era = days.rem_euclid(DAYS_PER_ERA);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proprietary_and_open_module_reports() {
        let proprietary = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.129.03  Thu Oct 19 18:56:32 UTC 2023\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n";
        assert_eq!(
            parse_nvidia_driver_version(proprietary).as_deref(),
            Some("535.129.03")
        );
        let open = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (builder@host)  Tue Jan  6 00:00:00 UTC 2026\nGCC version:  gcc version 13.3.0\n";
        assert_eq!(
            parse_nvidia_driver_version(open).as_deref(),
            Some("580.159.04")
        );
        assert_eq!(parse_nvidia_driver_version("GCC version: 12.2.0\n"), None);
        assert_eq!(parse_nvidia_driver_version(""), None);
    }

    #[test]
    fn fallback_names_the_cuda_version() {
        let info = DeviceInfo {
            name: "test card".into(),
            compute_capability: (9, 0),
            multiprocessors: 132,
            l2_bytes: 50 << 20,
            total_memory: 80 << 30,
            cuda_driver_version: (13, 0),
        };
        let v = driver_version(&info);
        // Either this machine's module version, or the fallback.
        assert!(v == "CUDA 13.0 driver API" || v.contains('.'), "{v}");
    }

    #[test]
    fn civil_dates() {
        for (days, want) in [
            (0, (1970, 1, 1)),
            (11_016, (2000, 2, 29)),
            (19_723, (2024, 1, 1)),
            (20_783, (2026, 11, 26)),
            (-1, (1969, 12, 31)),
            (47_541, (2100, 3, 1)),
        ] {
            assert_eq!(civil_date(days), want, "day {days}");
        }
        let today = today_utc();
        assert_eq!(today.len(), 10, "{today}");
    }

    #[test]
    fn commit_is_never_empty() {
        assert!(!build_commit().is_empty());
        assert!(!commit().is_empty());
    }
}
