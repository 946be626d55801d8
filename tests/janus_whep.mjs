// Meetecho's WHEP server (janus-whep-server) in front of a Janus, for tests/janus.py.
//
//   node tests/janus_whep.mjs MODULE JANUS_WS_URL PORT
//
// MODULE is the path of janus-whep-server's whep.js (scripts/build-janus-whep.sh prints it).
// Serves WHEP at http://*:PORT/whep/endpoint/ID. Reads commands on stdin, one per line:
//   videoroom ID ROOM FEED   makes endpoint ID, a subscription to FEED in VideoRoom ROOM
// and answers each on stdout with "@@created ID" (or "@@error ID MESSAGE"). Prints "@@ready"
// once it is connected to Janus and listening. Other lines on stdout are janode's log.
import { pathToFileURL } from 'node:url';
import readline from 'node:readline';

const [modulePath, janusUrl, port] = process.argv.slice(2);
const { JanusWhepServer } = await import(pathToFileURL(modulePath).href);
// janode (the server's Janus client) logs to stdout; only its warnings are wanted here.
const janode = await import(pathToFileURL(modulePath.replace(/janus-whep-server\/src\/whep\.js$/, 'janode/src/janode.js')).href);
janode.default.Logger.setLevel('warning');
const server = new JanusWhepServer({
	janus: { address: janusUrl },
	rest: { port: Number(port), basePath: '/whep' },
	debug: 'warn',
});
await server.start();
console.log('@@ready');

const lines = readline.createInterface({ input: process.stdin });
lines.on('line', (line) => {
	const [command, id, room, feed] = line.trim().split(/\s+/);
	try {
		if (command !== 'videoroom') throw new Error(`unknown command ${command}`);
		server.createEndpoint({ id, plugin: 'videoroom', room: Number(room), feed: Number(feed) });
		console.log(`@@created ${id}`);
	} catch (err) {
		console.log(`@@error ${id} ${err.message}`);
	}
});
lines.on('close', async () => {
	await server.destroy().catch(() => {});
	process.exit(0);
});
