//! Any bytes given to the `zipserv-manifest.json` parser must give a
//! manifest or an error, never a panic; a manifest that parses lists only
//! plain relative paths, and writes back to JSON that parses to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zipserv_format::convert::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = Manifest::parse(data) else {
        return;
    };
    for f in &manifest.files {
        for path in [&f.path, &f.stored] {
            assert!(!path.starts_with('/') && !path.split('/').any(|c| c.is_empty() || c == ".."));
        }
    }
    assert_eq!(
        Manifest::parse(&manifest.to_json()).expect("a written manifest parses"),
        manifest
    );
});
