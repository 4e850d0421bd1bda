//! The game's rules, as plain functions over components: movement with
//! world bounds and collisions, and vitals (hunger, thirst, health,
//! experience, respawn). The tick loop (`tick.rs`) feeds them what it reads
//! from ecsdb and writes back what changed; keeping them pure keeps them
//! testable without a database.

use crate::model::{Body, BodyKind, Progress};

/// Top speed of a player (world units per second).
pub const SPEED: f32 = 180.0;
/// How quickly velocity reaches the input's target (per second).
pub const ACCEL: f32 = 10.0;
/// Per second.
pub const HUNGER_DRAIN: f32 = 0.5;
pub const THIRST_DRAIN: f32 = 0.8;
pub const STARVE_DAMAGE: f32 = 2.0;
pub const REGEN: f32 = 1.0;
pub const EAT_RATE: f32 = 15.0;
pub const DRINK_RATE: f32 = 20.0;
/// Experience per second spent eating or drinking.
pub const XP_RATE: u64 = 2;

/// A player's movement input: a direction, each axis in `-1..=1`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Input {
    pub x: f32,
    pub y: f32,
}

impl Input {
    /// Clamp to a unit vector; non-finite values count as zero.
    pub fn sanitized(x: f64, y: f64) -> Input {
        let f = |v: f64| if v.is_finite() { v.clamp(-1.0, 1.0) as f32 } else { 0.0 };
        let (x, y) = (f(x), f(y));
        let len = (x * x + y * y).sqrt();
        if len > 1.0 { Input { x: x / len, y: y / len } } else { Input { x, y } }
    }
}

/// An `f32` as the `f64` of its shortest decimal text, for JSON (`98.4`,
/// not `98.39999389648438`), the way ecsdb writes `f32` fields.
pub fn short(x: f32) -> f64 {
    if x.is_finite() { x.to_string().parse().unwrap_or(f64::from(x)) } else { 0.0 }
}

/// Level for an amount of experience: 1, then 20, 80, 180, … (20·(n-1)²) for level n.
pub fn level_for(xp: u64) -> u32 {
    1 + ((xp as f64 / 20.0).sqrt().floor() as u32)
}

/// Move `b` by `input` over `dt` seconds: accelerate toward the input's
/// velocity, stay inside `[r, size - r]`, and slide out of every
/// `obstacle` (position, radius, whether it is solid) it overlaps.
#[allow(clippy::needless_range_loop)] // x and y, side by side
pub fn step(b: &mut Body, input: Input, dt: f32, size: f32, obstacles: &[([f32; 3], f32)]) {
    let target = [input.x * SPEED, input.y * SPEED];
    let k = (ACCEL * dt).min(1.0);
    for i in 0..2 {
        b.velocity[i] += (target[i] - b.velocity[i]) * k;
        if b.velocity[i].abs() < 0.5 && target[i] == 0.0 {
            b.velocity[i] = 0.0;
        }
        b.position[i] += b.velocity[i] * dt;
    }
    for &(p, r) in obstacles {
        let dx = b.position[0] - p[0];
        let dy = b.position[1] - p[1];
        let d = (dx * dx + dy * dy).sqrt();
        let min = r + b.radius;
        if d < min {
            // Push out along the line between centres (or +x when they coincide).
            let (nx, ny) = if d > 1e-4 { (dx / d, dy / d) } else { (1.0, 0.0) };
            b.position[0] = p[0] + nx * min;
            b.position[1] = p[1] + ny * min;
            let vn = b.velocity[0] * nx + b.velocity[1] * ny;
            if vn < 0.0 {
                b.velocity[0] -= vn * nx;
                b.velocity[1] -= vn * ny;
            }
        }
    }
    for i in 0..2 {
        let (lo, hi) = (b.radius, size - b.radius);
        if b.position[i] < lo || b.position[i] > hi {
            b.position[i] = b.position[i].clamp(lo, hi);
            b.velocity[i] = 0.0;
        }
    }
    b.position[2] = 0.0;
    b.velocity[2] = 0.0;
}

/// What a vitals step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VitalsOutcome {
    pub died: bool,
    pub leveled_up: bool,
}

/// Drain and restore a player's vitals over `dt` seconds, given what it
/// touches (`near`: kinds of the bodies it overlaps). On death the player
/// is respawned at `respawn` with full vitals (experience is kept).
pub fn vitals(p: &mut Progress, near: &[BodyKind], dt: f32, respawn: [f32; 2]) -> VitalsOutcome {
    let eating = near.contains(&BodyKind::Food);
    let drinking = near.contains(&BodyKind::Water);
    p.hunger = (p.hunger - HUNGER_DRAIN * dt + if eating { EAT_RATE * dt } else { 0.0 }).clamp(0.0, 100.0);
    p.thirst = (p.thirst - THIRST_DRAIN * dt + if drinking { DRINK_RATE * dt } else { 0.0 }).clamp(0.0, 100.0);
    let mut dh = 0.0;
    if p.hunger <= 0.0 {
        dh -= STARVE_DAMAGE * dt;
    }
    if p.thirst <= 0.0 {
        dh -= STARVE_DAMAGE * dt;
    }
    if p.hunger > 50.0 && p.thirst > 50.0 {
        dh += REGEN * dt;
    }
    p.health = (p.health + dh).clamp(0.0, 100.0);
    let before = p.level;
    if eating || drinking {
        p.experience += XP_RATE * (dt.round().max(1.0) as u64);
    }
    p.level = level_for(p.experience);
    let mut out = VitalsOutcome { died: false, leveled_up: p.level > before };
    if p.health <= 0.0 {
        out.died = true;
        p.deaths += 1;
        p.health = 100.0;
        p.hunger = 100.0;
        p.thirst = 100.0;
        p.last_position = respawn;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(x: f32, y: f32) -> Body {
        Body { position: [x, y, 0.0], velocity: [0.0; 3], radius: 10.0, kind: BodyKind::Player }
    }

    #[test]
    fn moves_toward_input_and_stops() {
        let mut b = body(100.0, 100.0);
        for _ in 0..40 {
            step(&mut b, Input { x: 1.0, y: 0.0 }, 0.05, 1000.0, &[]);
        }
        assert!(b.position[0] > 300.0, "{b:?}");
        assert!((b.velocity[0] - SPEED).abs() < 5.0);
        for _ in 0..40 {
            step(&mut b, Input::default(), 0.05, 1000.0, &[]);
        }
        assert_eq!(b.velocity[0], 0.0);
    }

    #[test]
    fn stays_in_the_world_and_out_of_rocks() {
        let mut b = body(15.0, 500.0);
        for _ in 0..20 {
            step(&mut b, Input { x: -1.0, y: 0.0 }, 0.05, 1000.0, &[]);
        }
        assert_eq!(b.position[0], 10.0);
        let rock = ([200.0, 100.0, 0.0], 30.0);
        let mut b = body(150.0, 100.0);
        for _ in 0..40 {
            step(&mut b, Input { x: 1.0, y: 0.0 }, 0.05, 1000.0, &[rock]);
            let d = ((b.position[0] - 200.0).powi(2) + (b.position[1] - 100.0).powi(2)).sqrt();
            assert!(d >= 39.99, "inside the rock: {d}");
        }
    }

    #[test]
    fn input_is_clamped() {
        assert_eq!(Input::sanitized(f64::NAN, 5.0), Input { x: 0.0, y: 1.0 });
        let i = Input::sanitized(1.0, 1.0);
        assert!((i.x * i.x + i.y * i.y - 1.0).abs() < 1e-5);
    }

    #[test]
    fn vitals_drain_restore_and_respawn() {
        let mut p = Progress {
            level: 1,
            experience: 0,
            last_position: [0.0; 2],
            health: 100.0,
            hunger: 100.0,
            thirst: 100.0,
            deaths: 0,
            updated_at: 0,
        };
        vitals(&mut p, &[], 10.0, [1.0, 1.0]);
        assert_eq!((p.hunger, p.thirst), (95.0, 92.0));
        let out = vitals(&mut p, &[BodyKind::Food, BodyKind::Water], 10.0, [1.0, 1.0]);
        assert_eq!((p.hunger, p.thirst), (100.0, 100.0));
        assert_eq!(p.experience, 20);
        assert!(out.leveled_up);
        assert_eq!(p.level, 2);
        p.hunger = 0.0;
        p.thirst = 0.0;
        p.health = 3.0;
        let out = vitals(&mut p, &[], 1.0, [7.0, 8.0]);
        assert!(out.died);
        assert_eq!((p.health, p.deaths, p.last_position), (100.0, 1, [7.0, 8.0]));
        assert_eq!(p.experience, 20);
    }

    #[test]
    fn levels() {
        assert_eq!(level_for(0), 1);
        assert_eq!(level_for(19), 1);
        assert_eq!(level_for(20), 2);
        assert_eq!(level_for(80), 3);
    }
}
