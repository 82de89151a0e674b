import type request from 'supertest';
import { p256Csr } from './csr.js';

/**
 * Enrolls a registered device through the API as a factory line does: an admin creates a device
 * token, the device posts a P-256 CSR with it. Returns the new certificate's serial.
 */
export async function enrollWithDeviceToken(api: ReturnType<typeof request>, adminKey: string, deviceId: string): Promise<string> {
  const tok = (
    await api
      .post('/v1/enrollment-tokens')
      .set({ Authorization: `Bearer ${adminKey}` })
      .send({ deviceId })
      .expect(201)
  ).body.token as string;
  const res = await api
    .post('/v1/enroll')
    .set({ Authorization: `Bearer ${tok}` })
    .send({ csr: p256Csr(deviceId).pem })
    .expect(201);
  return res.body.serial as string;
}
