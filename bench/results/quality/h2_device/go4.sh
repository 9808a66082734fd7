Q=(python3 /root/code/bench/quality.py --models minilm-l6 --full-models "" --threads 1 --holdout 500 --seeds 0,1,2)
T=sst2,cola,mrpc,rte,stsb,file:rte
timeout 400 "${Q[@]}" --tasks $T --methods pac --jobs 16 --work /root/w/pacnew --out $OUT/pac_newdefault.json --label "h2-rte PAC new default (lr_for: 2e-3 on BERT) held-out" > /root/w/pacnew.log 2>&1
tail -n 8 /root/w/pacnew.log
tar czf $OUT/runs4.tgz -C /root/w pacnew pacnew.log
