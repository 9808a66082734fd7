Q=(python3 /root/code/bench/quality.py --models minilm-l6 --full-models "" --threads 1 --holdout 500 --seeds 0,1,2)
T=sst2,cola,mrpc,rte,stsb,file:rte
timeout 540 "${Q[@]}" --tasks $T --sweep /root/m/sweep3.json --jobs 16 --work /root/w/sweep3 --out $OUT/sweep3.json --label "h2-rte sweep3 held-out" > /root/w/sweep3.log 2>&1
tail -n 3 /root/w/sweep3.log
tar czf $OUT/runs3.tgz -C /root/w sweep3 sweep3.log
