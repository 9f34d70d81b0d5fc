//! libFuzzer entry point of medic-fuzz's `wire` target.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medic_fuzz::driver::Features;

fuzz_target!(|data: &[u8]| {
    let target = medic_fuzz::targets::by_name("wire").expect("a medic-fuzz target");
    (target.run)(data, &mut Features::default());
});
