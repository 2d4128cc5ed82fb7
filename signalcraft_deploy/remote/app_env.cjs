// Shipped into each release as .signalcraft/env.cjs by signalcraft-deploy; Node.js loads it before
// the app (PM2's node_args: --require), in every cluster worker, trial and handover copy.
// It puts APP_ENV_FILE's values, the JSON object in env.json beside it, into process.env, so that
// they never pass through PM2 (its dump, `pm2 env`, `pm2 describe`) or a command line.
// The folder is this file's real one: `current/.signalcraft/env.cjs` is read through the link as
// it points when the process starts, so a new release's processes read the new release's values
// and a rollback's the old ones. A variable the process was started with keeps its value (PORT,
// NODE_ENV), as with the dotenv package. CommonJS (.cjs) in any package, "type": "module" too.
"use strict";

const fs = require("fs");
const path = require("path");

const file = path.join(path.dirname(fs.realpathSync(__filename)), "env.json");
let text = "{}";
try {
  text = fs.readFileSync(file, "utf8");
} catch (err) {
  if (err.code !== "ENOENT") {  // none: the release has no .env
    throw new Error(`signalcraft-deploy: cannot read the app's environment ${file}: ${err.code}`);
  }
}
let values;
try {
  values = JSON.parse(text);
} catch (err) {  // its message would quote the text: the values
  throw new Error(`signalcraft-deploy: ${file} is not a JSON object; deploy again`);
}
for (const [name, value] of Object.entries(values)) {
  if (typeof value === "string" && !Object.prototype.hasOwnProperty.call(process.env, name)) {
    process.env[name] = value;
  }
}
