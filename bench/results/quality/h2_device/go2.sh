Q=(python3 /root/code/bench/quality.py --models minilm-l6 --full-models "" --threads 1 --holdout 500 --seeds 0,1,2)
T=sst2,cola,mrpc,rte,stsb,file:rte
timeout 540 "${Q[@]}" --tasks $T --sweep /root/m/sweep2.json --jobs 16 --work /root/w/sweep2 --out $OUT/sweep2.json --label "h2-rte sweep2 held-out" > /root/w/sweep2.log 2>&1
tail -n 3 /root/w/sweep2.log
tar czf $OUT/runs2.tgz -C /root/w sweep2 sweep2.log
