"""``%%bpf`` and ``%bpf``: IPython's side of bpfnb (the only package that knows IPython).

``%%bpf NAME`` compiles the cell, loads and attaches it, and binds NAME to the
Object; the registry (bpfnb.registry) owns it from then on. A re-run that fails at
any step (clang error, open, verifier rejection, attach) leaves the previous object
running and bound; a good one replaces it.

Errors: every bpfnb exception shows in the notebook as its message alone, without
Python frames (``BPFCellError._render_traceback_`` for the magic's own, a handler set
with ``shell.set_custom_exc`` for those raised by bpfnb calls in ordinary cells);
``%bpf why`` shows the last one in full: the whole verifier log, the libbpf log,
clang's command and the Python traceback.
``%%bpf NAME --engines all`` loads the cell on ipyparallel engines instead (bpfnb.fleet).
A lab's exercise stub (bpfnb.exercise: only comments, one "your answer here"), in a
``%%bpf`` cell or a Python one, fails its cell with one line, so Run All stops there.

Files: this one holds the magics and their arguments; errors.py how a failure shows;
views.py what shows under a cell.
"""

from __future__ import annotations

import ast
import functools
import html
import keyword
import shlex
import time

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from .. import build, exercise, lasterror, loader, mcpu, output
from ..lasterror import CELL_FILENAME, describe as _describe
from ..follow import uncounted
from ..libbpf import BPFError, RangeError, VerifierError, end_looks
from ..listing import objects_frame
from ..registry import registry
from ..summary import summarize
from .views import (_DASHBOARD, _PROGRESS_STEP, _PrintkView, _Progress, _cell_finished,
                      _cell_started, _heading, _ms, _print_before_stop, _print_maps,
                      _recording_note, _show_dashboard, _show_data, _stream_displays)
from .errors import (_CAUGHT, BPFCellError, _kept, _live_names, _Rejected,
                     _set_range_message, _show_error)


@magics_class
class BPFMagics(Magics):

    @magic_arguments("%bpf")  # IPython adds a "%": usage reads %%bpf
    @argument("name", help="the Python name bound to the loaded object (bpfnb.Object)")
    @argument("--no-attach", action="store_true",
              help="load but do not attach; call NAME.attach() (or NAME.progs.x.attach_*)")
    @argument("--no-load", action="store_true",
              help="open only: set globals, resize maps, then NAME.load() and NAME.attach()")
    @argument("--set", action="append", default=[], metavar="VAR=VALUE",
              help="set a global variable before load (repeatable); VALUE is a Python "
                   "literal, else a string; {expr} is expanded, e.g. "
                   "--set target_pid={os.getpid()}")
    @argument("-D", action="append", default=[], dest="defines", metavar="MACRO[=V]",
              help="define a C macro (repeatable)")
    @argument("--cflags", default="", help='more clang flags, e.g. --cflags "-O1 -I/path"')
    @argument("--for", type=float, dest="seconds", metavar="SECONDS",
              help="attach for SECONDS, detach, then print every non-empty map as "
                   "bpftrace does at exit (histograms as bars, counters largest first)")
    @argument("--record", metavar="PATH",
              help="record streams, map snapshots and globals into the directory PATH "
                   "(Parquet, see bpfnb.record) while it runs: with --for for SECONDS, "
                   "else until %%bpf stop NAME or NAME.recording.stop()")
    @argument("--interval", type=float, default=1.0, metavar="S",
              help="with --record/--recording: seconds between map snapshots (default 1; "
                   "reads are snapshotted besides, see --recording)")
    @argument("--plot", action="store_true",
              help="with --for: end with a plot of the maps instead of tables")
    @argument("-q", "--quiet", action="store_true",
              help="show nothing when it works (with --for: no maps at the end)")
    @argument("--replay", metavar="PATH",
              help="bind NAME to the recording at PATH (bpfnb.replay): no BPF runs and no "
                   "privilege is needed; the cell's text is only compared with the "
                   "recorded source")
    @argument("--recording", metavar="PATH",
              help="live where this process can load BPF (CAP_BPF, clang, libbpf), else "
                   "a replay of PATH: one notebook for both. Live, it records to PATH "
                   "when PATH does not exist yet (--rerecord: replace it), with a "
                   "snapshot at each read the notebook makes; replayed, the n-th read "
                   "answers as the n-th recorded one (see bpfnb.follow)")
    @argument("--rerecord", action="store_true",
              help="with --recording: when running live, record PATH again")
    @argument("--speed", type=float, metavar="X",
              help="with --replay/--recording: replay at X times the recorded pace "
                   "(dashboards animate); default: everything at once")
    @argument("--engines", metavar="all|0,2",
              help="load on these ipyparallel engines instead of here: NAME is a "
                   "FleetObject, its frames have a host column (see bpfnb.fleet)")
    @argument("--profile", help="with --engines: the ipyparallel profile of the cluster")
    @cell_magic("bpf")
    def bpf_cell(self, line, cell):
        """Compile the cell's BPF C with clang, load it through libbpf, attach it, and
        bind NAME to the object. Re-running replaces the object: the new one is
        compiled, loaded and attached first (so for a moment both are attached and both
        count events), then the previous one is destroyed and NAME rebound. If the new
        text fails at any step (compile, open, load, attach), the new object is
        destroyed and the previous one keeps running, bound to NAME."""
        args = self._parse_cell_line(line)
        stub = exercise.bpf_stub(cell)
        if stub is not None:  # an exercise left to the student: stop Run All here
            raise stub
        name = args.name
        if not name.isidentifier() or keyword.iskeyword(name):
            raise UsageError(f"%%bpf NAME: {name!r} is not a Python identifier")
        if args.record and (args.no_load or args.no_attach):
            raise UsageError("--record records a running object: it cannot go with "
                             "--no-load or --no-attach")
        record_to, live_note = self._replay_or_live(name, cell, args)
        if record_to is False:
            return
        if args.seconds is not None and (args.no_load or args.no_attach):
            raise UsageError("--for attaches: it cannot go with --no-load or --no-attach")
        if args.plot and args.seconds is None:
            raise UsageError("--plot shows the maps at the end of a --for run: add --for")
        if args.seconds is not None and not args.seconds > 0:
            raise UsageError("--for wants a positive number of seconds")
        if not cell.strip():
            raise UsageError("the %%bpf cell is empty: write BPF C below the %%bpf line")
        values = _parse_sets(args.set)
        cflags = shlex.split(args.cflags) + [f"-D{d}" for d in args.defines]
        if args.engines is not None or args.profile is not None:
            return self._fleet_cell(args, cell, cflags, values)

        obj, notes, warnings = self._open_and_load(name, cell, cflags, values,
                                                   load=not args.no_load)
        if not (args.no_load or args.no_attach):
            t0 = time.perf_counter()
            self._attach(name, obj)
            if any(p.links for p in obj.progs):  # hooks needing a target attach nothing
                notes.append(f"attached in {_ms(time.perf_counter() - t0)}")
        elif args.no_attach:
            notes.append(f"not attached (--no-attach): {name}.attach() attaches it")
        old = registry.get(name)
        if old is not None and old is not obj:
            old.detach(wait=False)  # stopped now; the kernel lets it go in the background
        registry.install(name, obj)  # only now is the previous NAME destroyed
        self.shell.user_ns[name] = obj
        if args.record or record_to:
            obj.source, obj.cflags = cell, tuple(cflags)  # for the recording's manifest
        if args.record:
            try:
                obj.record(args.record, interval=args.interval)
            except (OSError, ValueError) as e:
                registry.stop(name)
                raise BPFCellError(f"%%bpf {name}: cannot record, so nothing of {name} is "
                                   f"running now.\n{e}", e) from None
            notes.append(f"recording to {args.record}")
        if live_note:
            notes.append(live_note)
        if record_to:
            from ..replay import start_recording
            notes.append(start_recording(obj, record_to, args.seconds, args.interval))
        printk = "bpf_printk" in cell and not args.no_load  # its lines go under the cell
        if args.seconds is not None:
            if printk:
                _PrintkView(name, obj)
            self._run_for(name, obj, args.seconds, args.plot, args.quiet,
                          obj.recording if args.record or record_to else None)
            return
        if not args.quiet:
            with uncounted():  # what the cell shows is none of the notebook's reads
                display(summarize(obj, name, notes, warnings))
        if printk:
            _PrintkView(name, obj)

    @staticmethod
    def _attach(name, obj):
        """Attach the new object while the previous NAME still runs (both count for that
        moment); if it fails, the new one goes and the previous one stays bound."""
        try:
            obj.attach()
        except BPFError as e:
            keeps = _kept(name) or f", so nothing of {name} is running now"
            obj.destroy()
            raise BPFCellError(f"%%bpf {name}: could not attach{keeps}.\n{_describe(e)}",
                               e) from None
        except BaseException:
            obj.destroy()
            raise

    def _fleet_cell(self, args, cell, cflags, values):
        """``--engines``: compile here, load on the engines (bpfnb.fleet does the work)."""
        from ..fleet import Fleet, FleetError
        name = args.name
        if args.seconds is not None or args.no_load or args.plot:
            raise UsageError("--engines loads and attaches on every engine: it cannot go "
                             "with --for, --plot or --no-load")
        targets = _engine_targets(args.engines or "all")
        result = _compile(name, cell, cflags, _kept(name))
        try:
            fleet = Fleet(targets=targets, profile=args.profile)
            fo = fleet.load(result.path, name=name, set=values, attach=not args.no_attach)
        except (OSError, ValueError, RuntimeError, FleetError) as e:
            raise BPFCellError(f"%%bpf {name} --engines: {e}{_kept(name)}", e) from None
        registry.install(name, fo)  # a re-run tears the previous NAME down on every engine
        self.shell.user_ns[name] = fo
        if not args.quiet:
            display(fo.summary())

    def _parse_cell_line(self, line):
        """Shell-like quoting (``--set 'msg="hi there"'``), and ``--cflags "-O1 -g"``
        taken as one value although it starts with "-" (argparse would read it as -O1)."""
        try:
            argv = shlex.split(line)
        except ValueError as e:
            raise UsageError(f"%%bpf {line}: {e}") from None
        for i in range(len(argv) - 2, -1, -1):
            if argv[i] == "--cflags":
                argv[i:i + 2] = [f"--cflags={argv[i + 1]}"]
        return self.bpf_cell.parser.parse_args(argv)

    def _open_and_load(self, name, cell, cflags, values, load):
        """Compile, open, set globals and load; on failure the previous NAME stays. A
        verifier rejection that bpfnb.mcpu knows (bounds lost to the -mcpu's codegen) is
        built again with the other -mcpu, as bpfnb.load does, and the summary says so."""
        keeps = _kept(name)
        try:
            return self._build_and_load(name, cell, cflags, values, load, keeps)
        except _Rejected as first:
            rebuilt = mcpu.rebuild(cflags, first.error)
            if rebuilt is not None:
                try:
                    obj, notes, warnings = self._build_and_load(name, cell, rebuilt.cflags,
                                                                values, load, keeps)
                    return obj, [*notes, rebuilt.note], warnings
                except _Rejected as second:
                    first.error.hint = mcpu.also_rejected(first.error, second.error)
                except BPFCellError as second:
                    first.error.hint = mcpu.also_rejected(first.error, second.error)
            raise BPFCellError(f"%%bpf {name}: the verifier rejected the cell{keeps}.\n"
                               f"{_describe(first.error)}", first.error) from None

    def _build_and_load(self, name, cell, cflags, values, load, keeps):
        result = _compile(name, cell, cflags, keeps)
        notes = ["compile cached" if result.cached else f"compiled in {_ms(result.seconds)}"]
        try:
            obj = loader.open(result.path, name=name)
        except BPFError as e:
            raise BPFCellError(f"%%bpf {name}: cannot open the compiled object{keeps}.\n"
                               f"{_describe(e)}", e) from None
        try:
            try:
                obj.set(**values)
            except RangeError as e:
                raise BPFCellError(f"%%bpf {name}: {_set_range_message(e, values)}{keeps}.",
                                   e) from None
            except (AttributeError, TypeError, ValueError, OverflowError) as e:
                raise BPFCellError(f"%%bpf {name}: --set failed{keeps}.\n{e}", e) from None
            if load:
                t0 = time.perf_counter()
                try:
                    obj.load()
                except VerifierError as e:
                    raise _Rejected(e) from None
                except BPFError as e:
                    raise BPFCellError(f"%%bpf {name}: the kernel did not load the cell"
                                       f"{keeps}.\n{_describe(e)}", e) from None
                notes.append(f"loaded in {_ms(time.perf_counter() - t0)}")
        except BaseException:
            obj.destroy()
            raise
        return obj, notes, result.warnings

    def _replay_or_live(self, name, cell, args):
        """--replay / --recording (see bpfnb.replay.choose): (False, None) once NAME is
        bound to a replay; else (the path to record to, or None; a note) to run live."""
        from ..replay import choose
        if args.rerecord and not args.recording:
            raise UsageError("--rerecord goes with --recording PATH")
        if args.interval != 1.0 and not (args.record or args.recording):
            raise UsageError("--interval is the pace of a recording's snapshots: add "
                             "--record PATH or --recording PATH")
        if args.speed is not None and not (args.replay or args.recording):
            raise UsageError("--speed is the pace of a replay: add --replay or --recording")
        if args.replay and args.recording:
            raise UsageError("--replay PATH always replays; --recording PATH replays only "
                             "where BPF cannot load: give one of them")
        if not (args.replay or args.recording):
            return None, None
        how, why = ("replay", None) if args.replay else choose(args.recording, args.rerecord)
        if how == "replay":
            self._bind_replay(name, args.replay or args.recording, cell, args, why)
            return False, None
        return (args.recording, None) if how == "record" else (None, why)

    def _bind_replay(self, name, path, cell, args, why):
        from ..replay import ReplayError, cell_summary, has_reads, replay
        # --recording keeps the live cell's line: what changes a program before it
        # loads was recorded with it; --replay says nothing of the kind
        if (args.no_load or args.no_attach) and not args.recording:
            raise UsageError("a replay is never loaded nor attached: drop --no-load and "
                             "--no-attach")
        if (args.set or args.defines or args.cflags) and not args.recording:
            raise UsageError("--set, -D and --cflags change a program before it loads; a "
                             "replay shows what was recorded with the recorded ones")
        try:
            # --recording: the notebook's cells read it as they read it live (the
            # recording's read marks, when it has them; see bpfnb.follow)
            follow = "reads" if args.recording and has_reads(path) else "clock"
            obj = replay(path, speed=args.speed, name=name, follow=follow)
            if args.no_load and args.recording:  # recorded from its load() on
                obj.opened()
        except ReplayError as e:
            hint = (f"\nThis process cannot run the cell live: {why}. Record it where BPF "
                    f"loads, with %%bpf {name} --recording {path}" if why else "")
            raise BPFCellError(f"%%bpf {name}: {e}{hint}", e) from None
        except ValueError as e:
            raise UsageError(f"%%bpf {name}: {e}") from None
        registry.install(name, obj)
        self.shell.user_ns[name] = obj
        if args.quiet:
            return
        text = cell_summary(obj, name, cell, why)
        display({"text/plain": text, "text/html": f"<pre>{html.escape(text)}</pre>"},
                 raw=True)
        if args.seconds is not None:
            _show_data(obj)

    def _run_for(self, name, obj, seconds, plot=False, quiet=False, rec=None):
        """Like bpftrace: run for a while, detach, print (or plot) the maps; with a
        recording, stop it first (its last snapshot) and say what it wrote."""
        progress = _Progress(self.shell, name, seconds)
        t0 = time.monotonic()
        interrupted = False
        try:
            while (left := seconds - (time.monotonic() - t0)) > 0:
                time.sleep(min(_PROGRESS_STEP, left))
                progress.update(time.monotonic() - t0, _recording_note(rec))
        except KeyboardInterrupt:  # stop early, still show what was collected
            interrupted = True
        finally:
            elapsed = time.monotonic() - t0
            if rec is not None:  # the records it still holds are converted now
                note = _recording_note(rec)
                rec.stop(progress=lambda *p: progress.saving(elapsed, note, *p))
            obj.detach()
            progress.close(elapsed, _recording_note(rec))
        if rec is not None and rec.error:
            raise BPFCellError(f"%%bpf {name}: the recording stopped early: {rec.error}")
        if quiet:
            return
        how = "interrupted after" if interrupted else "detached after"
        _heading(f"{name}: {how} {elapsed:.1f} s" + (f"; {rec!r}" if rec else ""))
        if plot:
            from ..live import plot_maps
            display(plot_maps(obj))
        else:
            _print_maps(name, obj)

    # --- %bpf ---------------------------------------------------------------

    @magic_arguments("bpf")
    @argument("command", choices=["list", "stop", "show", "why", "doctor", "vmlinux", "probes",
                                  "new"],
              help="list: live objects; stop NAME | stop --all: destroy; show NAME: its "
                   "maps as DataFrames; why: the last bpfnb error in full (the whole "
                   "verifier log, the libbpf log, the Python traceback); doctor: what "
                   "this machine allows; vmlinux: path "
                   "of the cached vmlinux.h; probes PATTERN: the probes, their arguments "
                   "and whether they attach here (bpftrace -l patterns: '*openat*', "
                   "'t:syscalls:*', 'u:/path/bin:func*'); new PROBE: a starter %%%%bpf cell "
                   "for PROBE in the next input cell")
    @argument("name", nargs="?", help="the object's name (for stop and show), the pattern "
                                      "(probes) or the probe (new)")
    @argument("--all", action="store_true", help="with stop: every object")
    @argument("-q", "--quiet", action="store_true",
              help="with stop: do not print the maps before tearing down")
    @argument("--count-by", metavar="KEY[,KEY]",
              help="with new: count by comm, pid, tid, cpu, stack, ustack or an argument")
    @argument("--hist", metavar="FIELD", help="with new: a log2 histogram of an argument, "
                                              "or latency (entry to exit)")
    @argument("--events", metavar="F1,F2", help="with new: stream these arguments (and "
                                                "pid, comm) through a ring buffer")
    @argument("--name", dest="cell_name", metavar="NAME",
              help="with new: the %%%%bpf cell's name (default: from the probe)")
    @line_magic("bpf")
    def bpf_line(self, line):
        """Manage the objects made by %%bpf cells, find probes, and check the machine."""
        if line.strip() in ("--help", "-h"):  # the parser has no -h (IPython's choice)
            print(self.bpf_line.parser.format_help())
            return None
        args = parse_argstring(self.bpf_line, line)
        if args.command == "list":
            return objects_frame()
        if args.command == "stop":
            if args.all:
                if not args.quiet:
                    for name in registry.names():
                        _print_before_stop(name)
                stopped = registry.stop_all()
                end_looks()  # nothing is left to look at: BPF stats go off
                print(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
                return None
            name = self._name(args)
            if registry.get(name) is not None and not args.quiet:
                _print_before_stop(name)
            if not registry.stop(name):
                raise UsageError(f"no %%bpf object named {args.name!r}" + _live_names())
            if not registry.names():
                end_looks()
            print(f"stopped {args.name}")
            return None
        if args.command == "show":
            obj = registry.get(self._name(args))
            if obj is None:
                raise UsageError(f"no %%bpf object named {args.name!r}" + _live_names())
            _show_data(obj)
            return None
        if args.command == "why":
            print(lasterror.why())
            return None
        if args.command == "doctor":
            from .. import doctor
            return doctor.run()
        if args.command == "probes":
            from ..probes import probes
            try:
                return probes(args.name or "*")
            except (ValueError, OSError) as e:
                raise UsageError(f"%bpf probes: {e}") from None
        if args.command == "new":
            self.shell.set_next_input(self._starter(args), replace=False)
            return None
        return str(build.vmlinux_h())

    @staticmethod
    def _starter(args) -> str:
        if not args.name:
            raise UsageError("%bpf new PROBE: which probe? List them with %bpf probes PATTERN")
        from ..starter import starter
        try:
            return starter(args.name, count_by=args.count_by, hist=args.hist,
                           events=args.events, name=args.cell_name)
        except (ValueError, OSError) as e:
            raise UsageError(f"%bpf new: {e}") from None

    @staticmethod
    def _name(args) -> str:
        if not args.name:
            raise UsageError(f"%bpf {args.command} NAME: which object?" + _live_names())
        return args.name


def _compile(name, cell, cflags, keeps):
    """clang over the cell; a failure is the cell's error, saying whether NAME stays."""
    try:
        # A leading newline makes clang's line numbers the notebook's own: the
        # %%bpf line is line 1 of the cell as Jupyter numbers it.
        return build.build("\n" + cell, cflags + output.cflags(cell), filename=CELL_FILENAME)
    except build.CompileError as e:
        raise BPFCellError(f"%%bpf {name}: the cell does not compile{keeps}.\n"
                           f"{_describe(e)}", e) from None
    except (build.ClangNotFound, FileNotFoundError) as e:
        raise BPFCellError(f"%%bpf {name}: {e}", e) from None


def _parse_sets(items) -> dict:
    values = {}
    for item in items:
        var, eq, text = item.partition("=")
        if not eq or not var.isidentifier():
            raise UsageError(f"--set {item!r}: write --set VAR=VALUE")
        try:
            values[var] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            if "{" in text:  # IPython leaves {expr} as is when evaluating it fails
                raise UsageError(f"--set {item}: IPython could not evaluate the {{...}} "
                                 f"in the notebook's namespace (is every name in it "
                                 f"defined and imported?)") from None
            values[var] = text  # a bare word: a string (for char[] globals)
    return values


def _engine_targets(text: str):
    """``--engines all`` or ``--engines 0,2`` -> "all" or [0, 2]."""
    if text == "all":
        return "all"
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        raise UsageError(f"--engines {text}: write all, or engine ids such as 0,2") from None


def _exercise_stub(lines: list[str]) -> list[str]:
    """Input transformer: a Python exercise stub (only comments, one "# your answer
    here") runs as raising bpfnb.exercise.NotAnswered, shown as its one line."""
    stub = exercise.python_stub("".join(lines))
    if stub is None:
        return lines
    return [f"raise __import__('bpfnb.exercise', fromlist=['_']).NotAnswered("
            f"{stub.label!r}, 'code')\n"]


def load_ipython_extension(ipython):
    from ..stream import EventStream
    ipython.register_magics(BPFMagics)
    if _exercise_stub not in ipython.input_transformers_post:
        ipython.input_transformers_post.append(_exercise_stub)
    ipython.display_formatter.ipython_display_formatter.for_type(EventStream,
                                                                 _stream_displays)
    if not ipython.custom_exceptions:  # never replace a handler someone else set
        ipython.set_custom_exc(_CAUGHT, _show_error)
    events = ipython.events
    if _cell_started not in events.callbacks["pre_run_cell"]:
        events.register("pre_run_cell", _cell_started)
        events.register("post_run_cell", _cell_finished)
    ipython.display_formatter.ipython_display_formatter.for_type_by_name(
        *_DASHBOARD, functools.partial(_show_dashboard, ipython))


def unload_ipython_extension(ipython):
    registry.stop_all()
    if _exercise_stub in ipython.input_transformers_post:
        ipython.input_transformers_post.remove(_exercise_stub)
    end_looks()  # the tables it showed are not looked at any more: BPF stats go off
    if ipython.custom_exceptions == _CAUGHT:
        ipython.set_custom_exc((), None)
    events = ipython.events
    if _cell_started in events.callbacks["pre_run_cell"]:
        events.unregister("pre_run_cell", _cell_started)
        events.unregister("post_run_cell", _cell_finished)
    ipython.display_formatter.ipython_display_formatter.pop(".".join(_DASHBOARD), None)
    magics = ipython.magics_manager.magics
    magics["cell"].pop("bpf", None)
    magics["line"].pop("bpf", None)
    from ..stream import EventStream
    ipython.display_formatter.ipython_display_formatter.type_printers.pop(EventStream, None)
