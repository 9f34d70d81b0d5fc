//! libFuzzer entry point of medic-fuzz's `agent_config` target.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medic_fuzz::driver::Features;

fuzz_target!(|data: &[u8]| {
    let target = medic_fuzz::targets::by_name("agent_config").expect("a medic-fuzz target");
    (target.run)(data, &mut Features::default());
});
