//! Host-side stub of the probes crate. The programs are the `probes` binary, built only for the
//! bpfel target (collector/build.rs does that); this library exists so the collector can name the
//! crate as a build dependency and cargo rebuilds it when the probes change.
#![no_std]
