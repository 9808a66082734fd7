# h25 second call (README): h24's repeat.sh again, now that pac_vs_baselines runs the cycle collector before each
# in-process run (its default since h25; h24 and h25's first call ran without): the same 16 processes and cells.
N=repeat2 exec bash bench/results/h24_device/repeat.sh
