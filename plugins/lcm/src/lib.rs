//! reel-scheduler-lcm
