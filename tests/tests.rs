//! Integration tests: one test binary, one module per area. Fixtures start real peers
//! (pymodbus as an independent Modbus server, Debian's influxd 1.x, a fake speaking the
//! InfluxDB 2 write API as documented) on loopback; on failure they print the peer's output
//! and the gateway's log.

mod util;

mod batch;
mod cli;
mod faults;
mod gateway;
mod influx;
mod journal;
mod layers;
mod rtu;
mod scan;
mod secrets;
mod spool;
mod status;
mod systemd;
mod tcp;
mod v2;
mod versions;
mod watch;
