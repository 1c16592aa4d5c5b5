"""The sharing checks' arithmetic, in one place: each command prints one line,
STATUS<TAB>DETAIL, where STATUS is PASS or FAIL against the bound it is given.

  figures.py pair A B SOLO                      two clients without gpushare: figures only
  figures.py weights A B SOLO WANT_A TOL MIN_SUM  A's share of A+B within TOL of WANT_A, and
                                                A+B at least MIN_SUM of what one does alone
  figures.py classes C M SOLO_C SOLO_M WANT_C WANT_M TOL
                                                each as a fraction of its solo rate, within
                                                TOL of its class weight's split
  figures.py window FILE_A FILE_B WANT_A TOL    steps (one time stamp per line, after
                                                'step_times=') counted over the window both
                                                trainers ran in; A's share within TOL of WANT_A
  figures.py fractions SOLO TOL RATE:WANT...     each client's rate as a fraction of the
                                                solo rate within TOL of its WANT (ceilings)
  figures.py colocated C M SOLO_C SOLO_M SLICED_C SLICED_M MIN_RATIO
                                                the pair's work (each rate as a fraction of its
                                                solo rate, summed) at least MIN_RATIO times the
                                                same pair's time-sliced (SLICED_C, SLICED_M)
Rates are what the clients counted themselves (launches per second).
"""
import sys


def verdict(ok, detail):
    print(("PASS" if ok else "FAIL") + "\t" + detail)


def pair(a, b, solo):
    a, b, solo = float(a), float(b), float(solo)
    verdict(a > 0 and b > 0,
            f"{a:.0f} + {b:.0f} /s: {a / (a + b):.3f}/{b / (a + b):.3f}, together {(a + b) / solo:.1%} of one alone ({solo:.0f} /s)")


def weights(a, b, solo, want_a, tol, min_sum):
    a, b, solo, want_a, tol, min_sum = map(float, (a, b, solo, want_a, tol, min_sum))
    share = a / (a + b)
    total = (a + b) / solo
    ok = abs(share - want_a) <= tol and total >= min_sum
    verdict(ok, f"{a:.0f} + {b:.0f} /s: {share:.3f}/{1 - share:.3f} (want {want_a:.3f} +- {tol}), "
                f"together {total:.1%} of one alone (want >= {min_sum:.0%})")


def classes(c, m, solo_c, solo_m, want_c, want_m, tol):
    c, m, solo_c, solo_m, want_c, want_m, tol = map(float, (c, m, solo_c, solo_m, want_c, want_m, tol))
    fc, fm = c / solo_c, m / solo_m
    ok = abs(fc - want_c) <= tol and abs(fm - want_m) <= tol
    verdict(ok, f"compute {fc:.3f} (want {want_c} +- {tol}) and memory {fm:.3f} (want {want_m} +- {tol}) "
                f"of their solo rates ({c:.0f}/{solo_c:.0f} and {m:.0f}/{solo_m:.0f} /s); sum {fc + fm:.2f}")


def fractions(solo, tol, *pairs):
    solo, tol = float(solo), float(tol)
    got = [(float(r) / solo, float(w)) for r, w in (p.split(":") for p in pairs)]
    ok = bool(got) and all(abs(f - w) <= tol for f, w in got)
    verdict(ok, ", ".join(f"{f:.3f} (want {w} +- {tol})" for f, w in got) + f" of one alone ({solo:.0f} /s)")


def colocated(c, m, solo_c, solo_m, sliced_c, sliced_m, min_ratio):
    c, m, solo_c, solo_m, sliced_c, sliced_m, min_ratio = map(
        float, (c, m, solo_c, solo_m, sliced_c, sliced_m, min_ratio))
    work = c / solo_c + m / solo_m
    sliced = sliced_c / solo_c + sliced_m / solo_m
    verdict(work >= min_ratio * sliced,
            f"compute {c / solo_c:.3f} + memory {m / solo_m:.3f} = {work:.2f} of their solo rates, "
            f"{work / sliced:.2f}x the pair time-sliced ({sliced:.2f}; want >= {min_ratio}x)")


def stamps(path):
    for line in open(path):
        if line.startswith("step_times="):
            return [float(t) for t in line.split("=", 1)[1].split(",") if t]
    return []


def window(file_a, file_b, want_a, tol):
    want_a, tol = float(want_a), float(tol)
    a, b = stamps(file_a), stamps(file_b)
    if len(a) < 2 or len(b) < 2:
        verdict(False, f"too few steps: {len(a)} and {len(b)}")
        return
    start, end = max(a[0], b[0]), min(a[-1], b[-1])
    na = sum(start <= t <= end for t in a)
    nb = sum(start <= t <= end for t in b)
    if end - start < 1 or na + nb == 0:
        verdict(False, f"the trainers overlapped for {end - start:.1f} s only")
        return
    share = na / (na + nb)
    verdict(abs(share - want_a) <= tol,
            f"{na} + {nb} steps in the common {end - start:.1f} s: {share:.3f}/{1 - share:.3f} (want {want_a:.3f} +- {tol})")


if __name__ == "__main__":
    commands = {"pair": pair, "weights": weights, "classes": classes, "window": window, "fractions": fractions,
                "colocated": colocated}
    try:
        commands[sys.argv[1]](*sys.argv[2:])
    except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError, OSError) as e:
        verdict(False, f"no figures: {type(e).__name__}: {e} (args {sys.argv[1:]})")
