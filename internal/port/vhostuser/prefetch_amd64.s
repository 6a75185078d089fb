#include "textflag.h"

// func prefetchLines(lines []uintptr, write bool)
TEXT ·prefetchLines(SB), NOSPLIT, $0-25
	MOVQ lines_base+0(FP), SI
	MOVQ lines_len+8(FP), CX
	MOVBLZX write+24(FP), DX
	TESTQ CX, CX
	JEQ done
	TESTB DL, DL
	JNE wloop
rloop:
	MOVQ (SI), AX
	PREFETCHT0 (AX)
	ADDQ $8, SI
	DECQ CX
	JNE rloop
	RET
wloop:
	MOVQ (SI), AX
	// PREFETCHW (AX), which the Go assembler does not know
	BYTE $0x0F; BYTE $0x0D; BYTE $0x08
	ADDQ $8, SI
	DECQ CX
	JNE wloop
done:
	RET

// func cpuid(leaf, sub uint32) (eax, ebx, ecx, edx uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-24
	MOVL leaf+0(FP), AX
	MOVL sub+4(FP), CX
	CPUID
	MOVL AX, eax+8(FP)
	MOVL BX, ebx+12(FP)
	MOVL CX, ecx+16(FP)
	MOVL DX, edx+20(FP)
	RET
