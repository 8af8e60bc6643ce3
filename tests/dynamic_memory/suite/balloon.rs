//! balloon_up and balloon_down: a guest and a balloon in one memory cgroup, the "VM".

use super::*;

/// The VM: a memory cgroup of this size holds guest and balloon.
const VM: u64 = 256 * MIB;
/// What the guest grows to before the balloon, in pages: 64 MiB.
const WORKING_SET: u32 = 1024;
/// What the balloon takes.
const BALLOON: u64 = 96 * MIB;
/// What the host keeps free in the VM when it sizes the guest's
/// allowance, for page tables and the children's own small heaps, so
/// that the VM never reaches its limit (where the kernel would OOM-kill
/// inside it).
const SLACK: u64 = 16 * MIB;

/// The guest: joins the VM, grows to its working set, then, each time
/// the host says `grow`, grows until its allowance refuses it and
/// reports where it stopped and how much `VmData` it has.
fn guest(procs: &Path, host_fds: [RawFd; 2], mut host: Ends) -> Result<(), String> {
    Ends::close_in_child(host_fds);
    vm::join(procs)?;
    let pattern = Pattern::new();
    let mut memory = new_memory(false)?;
    grow_filled(memory.as_mut(), &pattern, WORKING_SET)?;
    let data = vm_data()?;
    host.say(&format!("pages={WORKING_SET} data={data}"))?;
    while host.hear(BOUND)? == "grow" {
        let pages = grow_until_refused(memory.as_mut(), &pattern)?;
        let data = vm_data()?;
        host.say(&format!(
            "pages={pages} headroom={} data={data}",
            headroom()?
        ))?;
    }
    Ok(())
}

/// The balloon: joins the VM, takes `BALLOON` bytes of real memory on
/// `take`, releases them on `release`, and ends on `exit`.
fn balloon(procs: &Path, host_fds: [RawFd; 2], mut host: Ends) -> Result<(), String> {
    Ends::close_in_child(host_fds);
    vm::join(procs)?;
    let method = pressure::choose(None)?;
    let mut generator = pressure::Generator::new(method).map_err(|e| e.to_string())?;
    host.say("ready")?;
    loop {
        match host.hear(BOUND)?.as_str() {
            "take" => {
                generator
                    .take(BALLOON as usize, &mut |_| {})
                    .map_err(io("take"))?;
                host.say("took")?;
            }
            "release" => {
                generator.release_all().map_err(io("release"))?;
                host.say("released")?;
            }
            "exit" => return Ok(()),
            other => return Err(format!("unknown command {other:?}")),
        }
    }
}

/// A child of the VM, and the host's end of its channel.
struct Member {
    child: Running,
    host: Ends,
}

fn start(
    cgroup: &CgroupGuard,
    limit: Option<MemoryLimit>,
    body: fn(&Path, [RawFd; 2], Ends) -> Result<(), String>,
) -> Result<Member, String> {
    let (host, child_side) = talk::channel().map_err(io("pipe"))?;
    let (procs, host_fds) = (cgroup.procs(), host.fds());
    let child = rlimit_child::spawn(limit, BOUND, move |_| body(&procs, host_fds, child_side))
        .map_err(io("fork"))?;
    Ok(Member { child, host })
}

/// The host sizes the guest's allowance from the VM's free memory, as
/// the cgroup counts it: what the guest has now, plus what is free,
/// less the slack.
fn size_guest(vm: &CgroupGuard, guest: &Member, data: u64) -> Result<u64, String> {
    let free = vm.limit()?.saturating_sub(vm.usage()?);
    let allowance = data + free.saturating_sub(SLACK);
    let pid = guest.child.pid();
    let old = rlimit_child::get_limit(pid, Resource::Data).map_err(io("prlimit"))?;
    let new = libc::rlimit {
        rlim_cur: allowance,
        rlim_max: old.rlim_max,
    };
    rlimit_child::set_limit(pid, Resource::Data, &new).map_err(io("size the guest"))?;
    Ok(free)
}

/// A guest and an inflated balloon in one VM, as `balloon_up` leaves
/// them.
struct Inflated {
    vm: CgroupGuard,
    guest: Member,
    balloon: Member,
    /// The VM's usage before and after the balloon took its memory.
    vm_usage: (u64, u64),
    /// What was free in the VM when the host sized the guest.
    free: u64,
    /// The guest's size when its allowance refused it, its headroom
    /// then, and its `VmData`.
    refused_at: u64,
    headroom: u64,
    data: u64,
    psi: String,
}

/// Host pressure: the balloon takes 96 MiB inside the VM; the host
/// sizes the guest to what is left; the guest grows until refused.
fn inflate() -> Result<Result<Inflated, String>, String> {
    let vm = match vm::create("dynamic-memory-vm", VM)? {
        Ok(vm) => vm,
        Err(vm::NoCgroup(why)) => return Ok(Err(why)),
    };
    // RLIMIT_DATA far above the VM: the cgroup is the bound until the
    // host sizes the guest.
    let mut guest = start(&vm, data_limit(2 * VM, None), guest)?;
    let line = guest.host.hear(STEP_TIMEOUT)?;
    field(&line, "data")?;
    let mut balloon = start(&vm, data_limit(BALLOON + 32 * MIB, None), balloon)?;
    balloon.host.hear(STEP_TIMEOUT)?;
    let psi_before = memory_meter::pressure();
    let before = vm.usage()?;
    balloon.host.say("take")?;
    balloon.host.hear(STEP_TIMEOUT)?;
    let after = vm.usage()?;
    let psi = psi_delta(&psi_before, &memory_meter::pressure());
    let free = size_guest(&vm, &guest, field(&line, "data")?)?;
    guest.host.say("grow")?;
    let line = guest.host.hear(STEP_TIMEOUT)?;
    Ok(Ok(Inflated {
        refused_at: field(&line, "pages")? * STEP,
        headroom: field(&line, "headroom")?,
        data: field(&line, "data")?,
        vm,
        guest,
        balloon,
        vm_usage: (before, after),
        free,
        psi,
    }))
}

fn psi_delta(
    before: &memory_meter::Reading<memory_meter::Pressure>,
    after: &memory_meter::Reading<memory_meter::Pressure>,
) -> String {
    match (before, after) {
        (Ok(b), Ok(a)) => format!(
            "PSI memory some +{} µs, full +{} µs (system-wide, reported only)",
            a.value.some.total_us.saturating_sub(b.value.some.total_us),
            a.value.full.total_us.saturating_sub(b.value.full.total_us)
        ),
        (Err(why), _) | (_, Err(why)) => format!("PSI unavailable: {why}"),
    }
}

/// Checks what every balloon case checks: the VM never reached its
/// limit, nobody in it was OOM-killed, and both children exit cleanly.
fn finish(state: Inflated) -> Result<String, String> {
    let Inflated {
        vm,
        mut guest,
        mut balloon,
        ..
    } = state;
    let usage = vm.usage()?;
    let kills = vm.oom_kills()?;
    guest.host.say("exit")?;
    balloon.host.say("exit")?;
    expect_exit_0("guest", &guest.child.wait().map_err(io("wait"))?)?;
    expect_exit_0("balloon", &balloon.child.wait().map_err(io("wait"))?)?;
    ensure(usage < VM && kills == 0, || {
        format!(
            "the VM used {} of {} and saw {kills} OOM kills",
            mib(usage),
            mib(VM)
        )
    })?;
    Ok(format!(
        "VM {}: {} used of {}, oom_kill 0 ({}, {})",
        vm.name,
        mib(usage),
        mib(VM),
        vm.oom_file(),
        vm.version()
    ))
}

/// LISA `verify_dynamic_memory_balloon_up`: host pressure inflates the
/// balloon, and the VM's memory left to the guest falls.
pub(super) fn balloon_up() -> CaseResult {
    let state = match inflate()? {
        Ok(state) => state,
        Err(why) => return Ok(Verdict::Skipped(why)),
    };
    let (before, after) = state.vm_usage;
    let rise = after.saturating_sub(before);
    ensure(values_close(rise, BALLOON, 3), || {
        format!("the VM's usage rose {}, not 96 MiB within 3%", mib(rise))
    })?;
    ensure(state.headroom < STEP, || {
        format!(
            "the guest was refused with {} KiB free",
            state.headroom / KIB
        )
    })?;
    // The guest's VmData may exceed what it touched by a little (its
    // heap); what it grew past its working set must fit what was free.
    let grown = state.refused_at - u64::from(WORKING_SET) * STEP;
    let expected = state.free.saturating_sub(SLACK);
    ensure(values_close(grown, expected, 3), || {
        format!(
            "the guest grew {} after the balloon, not the {} the VM had left within 3%",
            mib(grown),
            mib(expected)
        )
    })?;
    let detail = format!(
        "the balloon took 96 MiB in the VM: its usage {} -> {} (+96 MiB within 3%); the \
         host sized the guest to the {} left (less {} slack); the guest grew from 64 MiB \
         by {} and was refused at {} ({} KiB left), no crash, bytes intact\n{}",
        mib(before),
        mib(after),
        mib(state.free),
        mib(SLACK),
        mib(grown),
        mib(state.refused_at),
        state.headroom / KIB,
        state.psi
    );
    let end = finish(state)?;
    Ok(Verdict::Passed(format!("{detail}\n{end}")))
}

/// LISA `verify_dynamic_memory_balloon_down`: the balloon deflates and
/// the guest's memory grows again. Here the balloon releases its 96 MiB
/// (the VM's usage falls by that, within 3%), the host sizes the guest
/// to the VM's free memory again, and the guest's growth resumes.
pub(super) fn balloon_down() -> CaseResult {
    let mut state = match inflate()? {
        Ok(state) => state,
        Err(why) => return Ok(Verdict::Skipped(why)),
    };
    let before = state.vm.usage()?;
    state.balloon.host.say("release")?;
    state.balloon.host.hear(STEP_TIMEOUT)?;
    let released = state.vm.usage()?;
    let fall = before.saturating_sub(released);
    ensure(values_close(fall, BALLOON, 3), || {
        format!("the VM's usage fell {}, not 96 MiB within 3%", mib(fall))
    })?;
    let free = size_guest(&state.vm, &state.guest, state.data)?;
    state.guest.host.say("grow")?;
    let line = state.guest.host.hear(STEP_TIMEOUT)?;
    let (pages, room) = (field(&line, "pages")?, field(&line, "headroom")?);
    let resumed = pages * STEP - state.refused_at;
    ensure(room < STEP, || {
        format!("refused with {} KiB free", room / KIB)
    })?;
    ensure(values_close(resumed, BALLOON, 3), || {
        format!("growth resumed by {}, not 96 MiB within 3%", mib(resumed))
    })?;
    let detail = format!(
        "the balloon released its memory: the VM's usage {} -> {} (-96 MiB within 3%); \
         the host sized the guest to the {} free (less {} slack); the guest grew from {} \
         to {} (+96 MiB within 3%, {} KiB left), bytes intact",
        mib(before),
        mib(released),
        mib(free),
        mib(SLACK),
        mib(state.refused_at),
        mib(pages * STEP),
        room / KIB,
    );
    let end = finish(state)?;
    Ok(Verdict::Passed(format!("{detail}\n{end}")))
}
