package io.lazyblk.tools.frontend;

/**
 * The outcome of one virtio-blk request. Immutable (do not change {@code data}).
 *
 * @param status the status byte the device wrote ({@link VirtioBlk#S_OK}, ...; 0xff if it wrote none)
 * @param data the device-writable data buffer as the device left it (empty for requests without one)
 * @param usedLength the length the device reported in its used entry
 */
public record BlkResponse(int status, byte[] data, int usedLength) {
    public boolean ok() {
        return status == VirtioBlk.S_OK;
    }

    @Override
    public String toString() {
        return "BlkResponse[" + VirtioBlk.statusName(status) + ", " + data.length + " data bytes, used length " + usedLength + "]";
    }
}
