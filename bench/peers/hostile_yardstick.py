#!/usr/bin/env python3
"""HAProxy as the yardstick for the agent's hostile-clients test
(node-agent/tests/agent_hostile.rs): the same legitimate open-loop load
(30% of an 8-connection closed-loop capacity, 64 connections, 8 s, the
generator at nice -10), alone and with the same attack one second in
(200 clients requesting 32 MiB and never reading, 1,000 slowloris
connections fed a byte a second, 300 more connections), against HAProxy
(one thread) with the agent's limits: 2 s for a request head, 3 s for a
client that stops reading, 1,300 connections. Prints both p99s.

Run from the repository root after `cargo build --release -p
tailmesh-bench`, as root: python3 bench/peers/hostile_yardstick.py
"""
import subprocess,socket,time,threading,json,resource,sys,os
HAPROXY_CFG = """global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 3s
    timeout server 30s
    timeout http-request 2s
    option http-keep-alive
    http-reuse always
frontend http_in
    bind 127.0.0.1:28080
    maxconn 1300
    acl bulk path_beg /_bench/bulk
    use_backend bulkb if bulk
    default_backend origin
backend origin
    server origin 127.0.0.1:28081 maxconn 1000
backend bulkb
    server b 127.0.0.1:28082 maxconn 1000
"""
resource.setrlimit(resource.RLIMIT_NOFILE,(8192,resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
B=os.path.join(os.getcwd(),"target/release/tailmesh-bench")
CFG="/tmp/tailmesh-hostile-haproxy.cfg"
open(CFG,"w").write(HAPROXY_CFG)
def up(port,extra=[]):
    return subprocess.Popen([B,"upstream","--listen",f"127.0.0.1:{port}","--workers","1","--exit-after","120s"]+extra,stdout=subprocess.DEVNULL)
u1=up(28081); u2=up(28082,["--sndbuf","64KiB"])
time.sleep(0.5)
hp=subprocess.Popen(["haproxy","-f",CFG],stderr=subprocess.DEVNULL)
time.sleep(0.8)
def load(args):
    r=subprocess.run(["nice","-n","-10",B,"load","--url","http://127.0.0.1:28080/legit","--json","--timeout","5s"]+args,capture_output=True,text=True); out=r.stdout
    if not out: print(r.stderr); sys.exit(1)
    v=json.loads(out)
    return v["rps"],v["latency_ns"]["p99"],v["errors_total"]
cap=load(["--connections","8","--duration","2s"])[0]
rate=str(int(cap*0.3))
legit=["--rate",rate,"--connections","64","--duration","8s"]
a=load(legit)
res={}
def bg(): res['atk']=load(legit)
t=threading.Thread(target=bg); t.start(); time.sleep(1)
nr=[]
for i in range(200):
    s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,16384); s.connect(("127.0.0.1",28080)); s.send(b"GET /_bench/bulk?bytes=33554432 HTTP/1.1\r\nHost: t\r\n\r\n"); nr.append(s)
def loris():
    cs=[]
    for i in range(1000):
        s=socket.create_connection(("127.0.0.1",28080)); s.send(b"GET /slow HTTP/1.1\r\nX-a: "); s.setblocking(False); cs.append(s)
    t0=time.time()
    while time.time()-t0<8:
        for s in cs:
            try: s.send(b"a")
            except Exception: pass
        time.sleep(1)
lt=threading.Thread(target=loris); lt.start()
time.sleep(1.5)
fl=[]
for i in range(300):
    try: fl.append(socket.create_connection(("127.0.0.1",28080),timeout=1))
    except Exception: pass
t.join(); 
print("haproxy: capacity %.0f rate %s: p99 alone %.2f ms, under attack %.2f ms; errors %d/%d"%(cap,rate,a[1]/1e6,res['atk'][1]/1e6,a[2],res['atk'][2]))
hp.kill(); u1.kill(); u2.kill()
os._exit(0)
