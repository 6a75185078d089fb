package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/butterfly-go/butterfly/api/protocol"
	"github.com/butterfly-go/butterfly/internal/labtest"
)

// clockTicks is the kernel's USER_HZ, the unit of /proc/PID/stat's times
// (100 on every Linux architecture Butterfly runs on).
const clockTicks = 100

// cpuTicks is utime + stime of process pid (/proc/PID/stat).
func cpuTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: fields count from after ")".
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad times", pid)
	}
	return u + st, nil
}

// idleSample records pid's CPU use over the idle seconds (percent of one
// CPU, "%.2f") with the machine's steal and load as KEY.cpu, KEY.steal,
// KEY.load.
func (b *bench) idleSample(t *caseT, pid int, key string) {
	s0 := stealSnap()
	t0, err := cpuTicks(pid)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Duration(b.cfg.idleSecs) * time.Second)
	t1, err := cpuTicks(pid)
	if err != nil {
		t.Fatal(err)
	}
	b.r[key+".cpu"] = fmt.Sprintf("%.2f", 100*float64(t1-t0)/clockTicks/float64(b.cfg.idleSecs))
	b.r[key+".steal"], b.r[key+".load"] = stealSince(s0), load1()
}

// nicAdd sends nic_add for one vNIC in group sg-open.
func nicAdd(t *caseT, api *labtest.API, id, mac string, vni uint32, ip, typ string) {
	_, err := api.Call(&protocol.MessageV0_Request{NicAdd: &protocol.MessageV0_Nic{
		Id: proto.String(id), Mac: proto.String(mac), Vni: proto.Uint32(vni), Ip: []string{ip},
		SecurityGroup: []string{"sg-open"},
		Type:          protocol.MessageV0_Nic_Type(protocol.MessageV0_Nic_Type_value[typ]).Enum(),
	}})
	if err != nil {
		t.Fatalf("nic_add %s: %v", id, err)
	}
}

// idle: butterflyd's CPU use with 100 idle TAP vNICs, then with 100
// vhost-user vNICs more on the same daemon, two of them connected to a
// testpmd whose ports are started but send nothing (rings live, no
// traffic): the daemon must sleep.
func (b *bench) idle() {
	phase := "idle-cpu"
	ok := b.cases.run("idle", func(t *caseT) {
		l := b.newLab(t)
		h := l.SingleHost(labtest.IPv4)
		b.startDaemon(h, "idle")
		h.OpenSG("sg-open")
		api := h.API()
		for i := 1; i <= 100; i++ {
			nicAdd(t, api, fmt.Sprintf("idle-%d", i), fmt.Sprintf("52:54:00:00:01:%02x", i), uint32(1000+i%10), fmt.Sprintf("10.79.0.%d", i), "TAP")
		}
		time.Sleep(2 * time.Second) // let the daemon settle after the adds before sampling
		b.idleSample(t, h.PID(), "idle")
		b.say("RESULT idle-cpu | butterflyd with 100 idle TAP vNICs: %s%% of one CPU over %ds | steal %s%% load %s",
			b.r["idle.cpu"], b.cfg.idleSecs, b.r["idle.steal"], b.r["idle.load"])
		phase = "idle-cpu-vhost"
		for i := 1; i <= 100; i++ {
			nicAdd(t, api, fmt.Sprintf("idlev-%d", i), fmt.Sprintf("52:54:00:00:02:%02x", i), uint32(1000+i%10), fmt.Sprintf("10.79.1.%d", i), "VHOST_USER_SERVER")
		}
		_, err := l.StartTestpmd("idle", "0@0,1@0", b.cfg.out+"/vhost-idle.log",
			"--vdev", "virtio_user0,path="+h.SockDir+"/qemu-vhost-idlev-1,queues=1",
			"--vdev", "virtio_user1,path="+h.SockDir+"/qemu-vhost-idlev-2,queues=1",
			"--", "-i", "--total-num-mbufs=8192")
		if err != nil {
			b.say("RESULT idle-cpu-vhost | testpmd did not start")
			t.Logf("%v", err)
			return
		}
		time.Sleep(2 * time.Second)
		b.idleSample(t, h.PID(), "idlev")
		b.say("RESULT idle-cpu-vhost | butterflyd with 100 idle TAP + 100 vhost-user vNICs (2 connected to an idle testpmd): %s%% of one CPU over %ds | steal %s%% load %s",
			b.r["idlev.cpu"], b.cfg.idleSecs, b.r["idlev.steal"], b.r["idlev.load"])
	})
	if !ok {
		b.say("RESULT %s | setup failed", phase)
	}
}
