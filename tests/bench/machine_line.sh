# Sourced by the bench scripts: prints the line that heads their tables, the machine's
# cores and model and how busy its cores were in the second before the run (a figure
# from a busy machine reads differently).
busy() {  # % of all cores busy over one second
  read -r _ a1 b1 c1 d1 e1 f1 g1 h1 _ < /proc/stat
  sleep 1
  read -r _ a2 b2 c2 d2 e2 f2 g2 h2 _ < /proc/stat
  local total=$(((a2 + b2 + c2 + d2 + e2 + f2 + g2 + h2) - (a1 + b1 + c1 + d1 + e1 + f1 + g1 + h1)))
  local idle=$(((d2 + e2) - (d1 + e1)))
  echo $((100 * (total - idle) / (total > 0 ? total : 1)))
}
model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
echo "$(nproc) cores ($model), $(busy) % busy in the second before the run"
