# kernel_profile_fold.awk - ncu's per-kernel summary (--csv --print-summary
# per-kernel, metric gpu__time_duration.sum) folded to one line per kernel
# name (launches of several grid shapes added), largest total time first.
# CSV fields are quoted and kernel names hold commas: split on '","'.
function unq(s) { gsub(/^"|"$/, "", s); return s }
/^"Process ID"/ {
  n = split($0, h, /","/)
  for (i = 1; i <= n; i++) col[unq(h[i])] = i
  header = 1
  next
}
header && /^"/ {
  m = split($0, f, /","/)
  if (m < col["Average"]) next
  name = substr(unq(f[col["Kernel Name"]]), 1, 110)
  unit = unq(f[col["Metric Unit"]])
  avg = unq(f[col["Average"]]); gsub(/,/, "", avg)
  scale = unit == "ns" || unit == "nsecond" ? 1e-6 : unit == "us" || unit == "usecond" ? 1e-3 : unit == "ms" || unit == "msecond" ? 1 : -1
  if (scale < 0) { printf "kernel_profile: unknown time unit %s\n", unit > "/dev/stderr"; bad = 1; exit 2 }
  inv = unq(f[col["Invocations"]]) + 0
  ms[name] += inv * avg * scale
  calls[name] += inv
  total += inv * avg * scale
  launches += inv
}
END {
  if (bad) exit 2
  if (!header) { print "kernel_profile: no per-kernel summary in the input (did ncu profile any kernel?)" > "/dev/stderr"; exit 1 }
  printf "kernel_profile: %d launches, %.3f ms of kernel time\n", launches, total
  for (k in ms) printf "%10.3f ms %6d x %9.1f us  %s\n", ms[k], calls[k], 1000 * ms[k] / calls[k], k | "sort -k1,1 -g -r"
}
