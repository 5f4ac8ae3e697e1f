/* Entry of every Flit test guest: rdi = vCPU index, rsi = boot info.
 *
 * At FLIT_IMAGE_GPA + FLIT_EXC_MARKER_OFF the marker "FLITEXC1" tells the
 * VMM that exception stubs follow at FLIT_EXC_STUBS_OFF, 16 bytes per vector
 * 0..31 (guests/abi.h). The VMM points an IDT at them. A stub runs at CPL 0
 * (the only ring-0 code of a guest, and only on a fatal exception): it pushes
 * the vector (and a zero where the CPU pushes no error code) and reports
 * vector, error code and rip through the test device, which fails the vCPU
 * with that reason instead of a silent triple fault. */
	.section .text.start, "ax"
	.globl _start
	.type _start, @function
_start:
	xor %ebp, %ebp
	and $-16, %rsp
	call rt_start
1:	jmp 1b /* rt_start never returns */
	.size _start, . - _start

	.org 0xf8
	.ascii "FLITEXC1"
	.org 0x100
	.code64
.macro stub vec, has_error
	.balign 16
	.if \has_error == 0
	pushq $0
	.endif
	pushq $\vec
	jmp exc_common
.endm
	stub 0, 0
	stub 1, 0
	stub 2, 0
	stub 3, 0
	stub 4, 0
	stub 5, 0
	stub 6, 0
	stub 7, 0
	stub 8, 1
	stub 9, 0
	stub 10, 1
	stub 11, 1
	stub 12, 1
	stub 13, 1
	stub 14, 1
	stub 15, 0
	stub 16, 0
	stub 17, 1
	stub 18, 0
	stub 19, 0
	stub 20, 0
	stub 21, 1
	stub 22, 0
	stub 23, 0
	stub 24, 0
	stub 25, 0
	stub 26, 0
	stub 27, 0
	stub 28, 0
	stub 29, 1
	stub 30, 1
	stub 31, 0
	.balign 16
/* Stack: vector, error code, rip, cs, rflags, rsp, ss. Ports: guests/abi.h. */
exc_common:
	mov $0x520, %dx /* FLIT_TESTDEV_PORT + FLIT_TD_EXC_VECTOR */
	mov (%rsp), %eax
	out %eax, (%dx)
	add $4, %dx /* error code */
	mov 8(%rsp), %eax
	out %eax, (%dx)
	add $4, %dx /* rip, low half */
	mov 16(%rsp), %eax
	out %eax, (%dx)
	add $4, %dx /* rip, high half: the VMM fails the vCPU here */
	mov 20(%rsp), %eax
	out %eax, (%dx)
2:	jmp 2b
	.section .note.GNU-stack, "", @progbits
